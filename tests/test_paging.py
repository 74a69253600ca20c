"""``paging.iter_skip_pages`` against scripted remote answers (httpx.MockTransport).

The emulator never sends a next link with ``$top`` (as the service); these cover the answers
it does not give: a service that does send next links, loops them, or repeats a page.
"""

import logging
import tracemalloc

import httpx
import orjson
import pytest

from endpoint_forensics.http.client import ApiClient
from endpoint_forensics.http.paging import iter_skip_pages
from endpoint_forensics.http.ratelimit import RateBudget, RateLimit

SCOPE = "https://api.securitycenter.microsoft.com/.default"
URL = "https://mde.test/api/machines"


class Tokens:
    def get_token(self, scope):
        return "token"

    def invalidate(self, scope):
        pass


def walk(answers, *, top, params=None, spool):
    """Pages (record lists) the client yields, and the URLs it asked for. Each page is read
    from its file in ``spool``, which the walk leaves there (only a repeated page's goes)."""
    seen = []
    script = list(answers)

    def handler(request):
        seen.append(str(request.url))
        return httpx.Response(200, content=orjson.dumps(script.pop(0)))

    client = ApiClient(Tokens(), transport=httpx.MockTransport(handler), sleep=lambda s: None)
    budget = RateBudget(RateLimit("machines", 1000, 10000))
    try:
        pages = []
        for page in iter_skip_pages(
            client,
            URL,
            scope=SCOPE,
            budget=budget,
            top=top,
            params=params,
            spool=lambda n: spool / f"page-{n}.jsonl",
        ):
            records = list(page.records())
            assert page.count == len(records)
            pages.append(records)
            page.lines.unlink()
    finally:
        client.close()
    return pages, seen, client.stats


def test_skip_grows_until_a_short_page_and_filters_are_kept(tmp_path):
    pages, seen, _ = walk(
        [{"value": [1, 2]}, {"value": [3, 4]}, {"value": [5]}],
        top=2,
        spool=tmp_path,
        params={"$filter": "healthStatus eq 'Active'", "$top": "9", "$skip": "7"},
    )
    assert pages == [[1, 2], [3, 4], [5]]
    query = "%24filter=healthStatus+eq+%27Active%27&%24top=2"
    assert seen == [f"{URL}?{query}", f"{URL}?{query}&%24skip=2", f"{URL}?{query}&%24skip=4"]


def test_an_exact_multiple_ends_on_an_empty_page(tmp_path):
    pages, seen, _ = walk([{"value": [1, 2]}, {"value": []}], top=2, spool=tmp_path)
    assert pages == [[1, 2], []]
    assert seen[-1].endswith("%24skip=2")


def test_a_next_link_is_followed_verbatim_to_the_end_of_its_chain(tmp_path):
    link = "https://mde.test/api/machines?$skiptoken=eyJh"
    pages, seen, _ = walk(
        [{"value": [1, 2], "@odata.nextLink": link}, {"value": [3, 4]}],
        top=2,
        spool=tmp_path,
    )
    # The chain ends at a page without a link, even a full one: no $skip after a link.
    assert pages == [[1, 2], [3, 4]]
    assert seen == [f"{URL}?%24top=2", link]


def test_a_page_that_repeats_ends_the_walk_with_a_warning(caplog, tmp_path):
    caplog.set_level(logging.WARNING, "endpoint_forensics.http.paging")
    page = {"value": [{"id": "a"}, {"id": "b"}]}
    pages, seen, stats = walk([page, page], top=2, spool=tmp_path)
    assert pages == [page["value"]]  # nothing twice
    assert len(seen) == 2
    assert stats["machines"]["repeated_pages"] == 1
    assert "repeated an earlier page" in caplog.text and "stopped after 2 records" in caplog.text


def test_a_page_repeating_an_older_one_also_ends_the_walk(tmp_path):
    first, second = {"value": [1, 2]}, {"value": [3, 4]}
    pages, seen, _ = walk([first, second, first], top=2, spool=tmp_path)
    assert list(tmp_path.iterdir()) == []  # the repeated page's file is gone too
    assert pages == [[1, 2], [3, 4]] and len(seen) == 3


def test_a_next_link_that_loops_ends_the_walk(caplog, tmp_path):
    caplog.set_level(logging.WARNING, "endpoint_forensics.http.paging")
    link = "https://mde.test/api/machines?$filter=x&$skip=10000"
    pages, seen, _ = walk(
        [
            {"value": [1], "@odata.nextLink": link},
            {"value": [2], "@odata.nextLink": link},
        ],
        top=5,
        spool=tmp_path,
    )
    assert pages == [[1], [2]] and seen == [f"{URL}?%24top=5", link]
    assert "gave a next link already followed" in caplog.text


def test_top_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="top must be at least 1"):
        walk([], top=0, spool=tmp_path)


def test_a_page_is_read_back_a_record_at_a_time_not_held_whole(tmp_path):
    # 10,000 machines of about 1.4 KB (14 MB): the most one call of /api/machines returns.
    record = {"id": "x" * 40, "computerDnsName": "y" * 1_300, "riskScore": "Low"}
    body = orjson.dumps({"value": [dict(record, n=i) for i in range(10_000)]})

    class Network(httpx.SyncByteStream):  # the body as a socket gives it, 64 KB at a time
        def __iter__(self):
            for start in range(0, len(body), 65_536):
                yield body[start : start + 65_536]

    client = ApiClient(
        Tokens(), transport=httpx.MockTransport(lambda r: httpx.Response(200, stream=Network()))
    )
    budget = RateBudget(RateLimit("machines", 1000, 10000))
    read = 0
    tracemalloc.start()
    try:
        for page in iter_skip_pages(
            client, URL, scope=SCOPE, budget=budget, top=10_000,
            spool=lambda n: tmp_path / f"page-{n}.jsonl",
        ):  # fmt: skip
            read += sum(1 for _ in page.records())
            if read >= 10_000:
                break  # the next $skip would ask the same scripted answer again
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        client.close()
    assert read == 10_000
    assert peak < len(body) / 4, (peak, len(body))
