"""The HTTP client against scripted remote answers (httpx.MockTransport stands in for Defender)."""

import httpx
import orjson
import pytest

from endpoint_forensics.errors import AuthError, HttpStatusError, TransientError, WireFormatError
from endpoint_forensics.http.client import ApiClient, sanitize_url
from endpoint_forensics.http.ratelimit import RateBudget, RateLimit

SCOPE = "https://api.securitycenter.microsoft.com/.default"


class Tokens:
    def __init__(self):
        self.issued = 0
        self.invalidated = 0

    def get_token(self, scope):
        self.issued += 1
        return f"token-{self.invalidated}"

    def invalidate(self, scope):
        self.invalidated += 1


def client_for(answers, tokens=None, **kw):
    """A client whose remote answers from ``answers`` in order; returns (client, seen requests, sleeps)."""
    seen, sleeps = [], []
    script = list(answers)

    def handler(request):
        seen.append(request)
        status, body, headers = script.pop(0)
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return httpx.Response(status, content=content, headers=headers)

    client = ApiClient(
        tokens or Tokens(), transport=httpx.MockTransport(handler), sleep=sleeps.append, **kw
    )
    return client, seen, sleeps


def budget():
    return RateBudget(RateLimit("machines", 1000, 10000))


def test_429_waits_retry_after_then_succeeds():
    client, seen, sleeps = client_for(
        [
            (
                429,
                {"error": {"code": "TooManyRequests", "message": "slow down"}},
                {"Retry-After": "2"},
            ),
            (200, {"value": [1]}, {}),
        ]
    )
    assert client.request_json(
        "GET", "https://mde.test/api/machines", scope=SCOPE, budget=budget()
    ) == {"value": [1]}
    assert sleeps == [2.0]
    assert len(seen) == 2
    assert client.stats["machines"]["throttled"] == 1


def test_401_gets_a_fresh_token_once_then_gives_up():
    tokens = Tokens()
    client, seen, _ = client_for(
        [
            (401, {"error": {"code": "Unauthorized", "message": "expired"}}, {}),
            (200, {"ok": 1}, {}),
        ],
        tokens,
    )
    assert client.request_json("GET", "https://mde.test/x", scope=SCOPE, budget=budget()) == {
        "ok": 1
    }
    assert tokens.invalidated == 1
    assert seen[0].headers["Authorization"] == "Bearer token-0"
    assert seen[1].headers["Authorization"] == "Bearer token-1"

    client, _, _ = client_for([(401, {"error": {"code": "Unauthorized", "message": "no"}}, {})] * 2)
    with pytest.raises(AuthError, match="refused a fresh token"):
        client.request_json("GET", "https://mde.test/x", scope=SCOPE, budget=budget())


def test_403_is_an_auth_error_about_permissions():
    client, _, _ = client_for(
        [(403, {"error": {"code": "Forbidden", "message": "Missing application roles"}}, {})]
    )
    with pytest.raises(
        AuthError, match=r"lacks a permission.*Forbidden: Missing application roles"
    ):
        client.request_json("GET", "https://mde.test/x", scope=SCOPE, budget=budget())


def test_5xx_and_bad_json_are_retried_with_backoff_then_give_up():
    client, _, sleeps = client_for(
        [(503, b"busy", {}), (200, b'{"cut', {}), (200, {"ok": True}, {})]
    )
    assert client.request_json("GET", "https://mde.test/x", scope=SCOPE, budget=budget()) == {
        "ok": True
    }
    assert len(sleeps) == 2 and all(0 < s <= 60 for s in sleeps)

    client, _, _ = client_for(
        [(500, {"error": {"code": "InternalServerError", "message": "boom"}}, {})] * 3,
        max_retries=2,
    )
    with pytest.raises(TransientError, match="gave up after 3 attempts"):
        client.request_json("GET", "https://mde.test/x", scope=SCOPE, budget=budget())


def test_other_4xx_carry_the_facts():
    client, _, _ = client_for(
        [
            (
                404,
                {
                    "error": {
                        "code": "ResourceNotFound",
                        "message": "Machine 1 was not found",
                        "target": "t",
                    }
                },
                {"request-id": "r-1"},
            )
        ]
    )
    with pytest.raises(HttpStatusError) as info:
        client.request_json(
            "GET", "https://mde.test/api/machines/1?sig=SECRET", scope=SCOPE, budget=budget()
        )
    err = info.value
    assert (err.status, err.code, err.request_id, err.method) == (
        404,
        "ResourceNotFound",
        "r-1",
        "GET",
    )
    assert "SECRET" not in str(err) and "SECRET" not in err.url


def test_paging_follows_next_links_verbatim():
    client, seen, _ = client_for(
        [
            (
                200,
                {
                    "value": [1, 2],
                    "@odata.nextLink": "https://mde.test/api/machines?$skip=2&$top=2",
                },
                {},
            ),
            (
                200,
                {
                    "value": [3, 4],
                    "@odata.nextLink": "https://mde.test/api/machines?$skiptoken=abc",
                },
                {},
            ),
            (200, {"value": [5]}, {}),
        ]
    )
    pages = list(
        page.value
        for page in client.iter_odata_pages(
            "https://mde.test/api/machines", scope=SCOPE, budget=budget(), params={"$top": "2"}
        )
    )
    assert pages == [[1, 2], [3, 4], [5]]
    assert [str(r.url) for r in seen] == [
        "https://mde.test/api/machines?%24top=2",
        "https://mde.test/api/machines?$skip=2&$top=2",
        "https://mde.test/api/machines?$skiptoken=abc",
    ]


def test_sanitize_url_redacts_signatures_only():
    url = "https://blob.test/part-0.json.gz?sv=2019-12-12&se=2021-01-11T14%3A35%3A13Z&sig=abcSECRET%3D"
    safe = sanitize_url(url)
    assert "abcSECRET" not in safe and "sig=REDACTED" in safe and "sv=2019-12-12" in safe
    assert sanitize_url("https://x.test/api/machines") == "https://x.test/api/machines"


def test_requests_carry_the_user_agent():
    client, seen, _ = client_for([(200, {}, {})])
    client.request_json("GET", "https://mde.test/x", scope=SCOPE, budget=budget())
    assert seen[0].headers["User-Agent"].startswith("epf/")


def test_an_answer_of_the_wrong_shape_is_a_wire_format_error():
    client, seen, _ = client_for([(200, [1, 2], {})])
    with pytest.raises(WireFormatError, match="expected an OData object, got list") as info:
        client.get_odata_page(
            "https://mde.test/api/machines", scope=SCOPE, budget=budget(), params={"sig": "SECRET"}
        )
    assert len(seen) == 1  # not retried: the same request would get the same answer
    assert info.value.method == "GET" and "sig=REDACTED" in info.value.url
    assert "SECRET" not in info.value.url and "SECRET" not in str(info.value)


def test_a_sibling_counts_its_own_requests_and_closes_nothing_shared():
    client, seen, _ = client_for([(200, {"value": [1]}, {}), (200, {"value": [2]}, {})])
    sibling = client.sibling()
    url, limit = "https://mde.test/api/machines", budget()
    assert sibling.request_json("GET", url, scope=SCOPE, budget=limit) == {"value": [1]}
    sibling.close()
    assert client.request_json("GET", url, scope=SCOPE, budget=limit) == {"value": [2]}
    assert sibling.stats["machines"]["requests"] == 1
    assert client.stats["machines"]["requests"] == 1
    assert len(seen) == 2
