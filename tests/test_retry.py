"""The retry policy's decisions: what each answer or failure means, how long a wait is, when
the retries are spent; then the client under it, over real HTTP on a loopback socket."""

import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseTimeoutError

from endpoint_forensics.errors import (
    CertificateUntrusted,
    HttpStatusError,
    LinkExpired,
    RequestTimedOut,
    TransientError,
)
from endpoint_forensics.http.client import ApiClient
from endpoint_forensics.http.ratelimit import RateBudget, RateLimit
from endpoint_forensics.http.retry import (
    RETRIED,
    RetryPolicy,
    Verdict,
    classify_error,
    classify_status,
    retry_after_seconds,
)
from endpoint_forensics.http.tls import PIN_MISMATCH

# --- decisions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.ACCEPT),
        (204, Verdict.ACCEPT),
        (429, Verdict.THROTTLED),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (504, Verdict.TIMED_OUT),
        (401, Verdict.REAUTHENTICATE),
        (301, Verdict.REFUSED),
        (400, Verdict.REFUSED),
        (403, Verdict.REFUSED),
        (404, Verdict.REFUSED),
        (408, Verdict.REFUSED),
        (413, Verdict.REFUSED),
        (501, Verdict.REFUSED),
        (505, Verdict.REFUSED),
    ],
)
def test_each_status_has_one_verdict(status, verdict):
    assert classify_status(status) is verdict


def test_only_throttling_server_errors_and_timeouts_are_sent_again():
    assert {v for v in Verdict if v in RETRIED} == {
        Verdict.THROTTLED,
        Verdict.RETRY,
        Verdict.TIMED_OUT,
    }


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] self-signed"), Verdict.UNTRUSTED),
        (httpx.ConnectError(f"{PIN_MISMATCH}: presented ab12"), Verdict.UNTRUSTED),
        (ServiceRequestError("[SSL: CERTIFICATE_VERIFY_FAILED] unknown CA"), Verdict.UNTRUSTED),
        (httpx.ReadTimeout("timed out"), Verdict.TIMED_OUT),
        (ServiceResponseTimeoutError("read timed out"), Verdict.TIMED_OUT),
        (httpx.ConnectTimeout("timed out"), Verdict.RETRY),  # nothing was sent
        (httpx.ConnectError("[Errno 111] Connection refused"), Verdict.RETRY),
        (httpx.RemoteProtocolError("Server disconnected"), Verdict.RETRY),
        (ServiceRequestError("Connection refused"), Verdict.RETRY),
    ],
)
def test_each_transport_failure_has_one_verdict(error, verdict):
    assert classify_error(error) is verdict


def test_backoff_doubles_up_to_its_cap_with_jitter():
    policy = RetryPolicy(backoff_base_seconds=1.0, backoff_cap_seconds=10.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
        waits = [policy.backoff_seconds(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits), attempt
        assert len(set(waits)) > 1  # jittered: concurrent clients do not retry in step


def test_retry_after_forms():
    assert retry_after_seconds("7") == 7
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("") is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:05 GMT", now=1445412480.0) == 5.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:05 GMT", now=1445412500.0) == 0.0
    assert retry_after_seconds("999999") == 3600  # capped


def test_429s_wait_retry_after_and_are_counted_until_the_cap():
    stats, sleeps = Counter(), []
    attempts = RetryPolicy(max_throttled=3).attempts(stats=stats, sleep=sleeps.append)
    for _ in range(3):
        attempts.wait(Verdict.THROTTLED, "GET x -> 429", retry_after=2.0)
    with pytest.raises(TransientError, match=r"GET x -> 429: still throttled after 3 waits"):
        attempts.wait(Verdict.THROTTLED, "GET x -> 429", retry_after=2.0)
    assert sleeps == [2.0, 2.0, 2.0]
    assert stats == Counter(throttled=3)  # the 429s waited out


def test_a_429_without_retry_after_backs_off_and_does_not_spend_the_retries():
    stats, sleeps = Counter(), []
    attempts = RetryPolicy(max_retries=1).attempts(stats=stats, sleep=sleeps.append)
    attempts.wait(Verdict.THROTTLED, "GET x -> 429")
    attempts.wait(Verdict.THROTTLED, "GET x -> 429")
    attempts.wait(Verdict.RETRY, "GET x -> 503")  # the one retry is still there
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0
    assert stats == Counter(throttled=2, retries=1)


def test_server_errors_and_timeouts_share_max_retries():
    stats, sleeps = Counter(), []
    attempts = RetryPolicy(max_retries=2).attempts(stats=stats, sleep=sleeps.append)
    attempts.wait(Verdict.RETRY, "GET x -> 503")
    attempts.wait(Verdict.TIMED_OUT, "GET x -> 504", status=504)
    cause = httpx.ConnectError("refused")
    with pytest.raises(
        TransientError, match=r"GET x: refused \(gave up after 3 attempts\)"
    ) as info:
        attempts.wait(Verdict.RETRY, "GET x: refused", cause=cause)
    assert info.value.__cause__ is cause
    assert len(sleeps) == 2 and stats == Counter(retries=2)


def test_a_timeout_that_must_not_be_sent_again_raises_at_once():
    stats, sleeps = Counter(), []
    attempts = RetryPolicy().attempts(stats=stats, sleep=sleeps.append, retry_timeouts=False)
    with pytest.raises(RequestTimedOut, match="no answer in time") as info:
        attempts.wait(Verdict.TIMED_OUT, "POST q -> 504: GatewayTimeout", status=504)
    assert info.value.status == 504 and sleeps == [] and stats == Counter(timed_out=1)
    attempts.wait(Verdict.THROTTLED, "POST q -> 429", retry_after=1.0)  # 429 is waited out
    attempts.wait(Verdict.RETRY, "POST q -> 503")
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    "verdict", [Verdict.ACCEPT, Verdict.REFUSED, Verdict.UNTRUSTED, Verdict.REAUTHENTICATE]
)
def test_what_is_not_retried_has_no_wait(verdict):
    attempts = RetryPolicy().attempts(stats=Counter(), sleep=pytest.fail)
    assert attempts.next_wait(verdict) is None
    with pytest.raises(ValueError, match="not retried"):
        attempts.wait(verdict, "GET x")


# --- the client under the policy, over loopback -------------------------------------------


class Remote:
    """A loopback HTTP server answering from a script: (status, headers, body), "reset"
    (close without an answer) or ("slow", seconds, then an answer). Records each request."""

    def __init__(self, script):
        self.script = list(script)
        self.seen: list[str] = []
        remote = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                remote.seen.append(self.path)
                remote.answer(self)

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda request, address: None  # a client that gave up
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, handler):
        step = self.script.pop(0)
        if step == "reset":
            # RST instead of FIN: the client sees the connection dropped mid-request.
            handler.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            handler.close_connection = True
            return
        if step[0] == "slow":
            time.sleep(step[1])
            step = step[2]
        status, headers, body = step
        handler.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def remote() -> Iterator:
    servers = []

    def start(*script):
        servers.append(Remote(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


class Tokens:
    def get_token(self, scope):
        return "token"

    def invalidate(self, scope):
        pass


def api(**kw):
    sleeps = []
    return ApiClient(Tokens(), sleep=sleeps.append, **kw), sleeps


def get(client, url, **kw):
    budget = RateBudget(RateLimit("machines", 1000, 10000))
    return client.request_json("GET", url, scope="s", budget=budget, **kw)


OK = (200, {"Content-Type": "application/json"}, b'{"value": []}')


def test_a_dropped_connection_is_sent_again(remote):
    server = remote("reset", OK)
    client, sleeps = api()
    with client:
        assert get(client, f"{server.url}/api/machines") == {"value": []}
    assert len(server.seen) == 2 and len(sleeps) == 1
    assert client.stats["machines"]["retries"] == 1


def test_a_read_timeout_is_retried_unless_the_request_must_not_be_sent_again(remote):
    server = remote(("slow", 1.0, OK), OK)
    client, sleeps = api(timeout_seconds=0.3)
    with client:
        assert get(client, f"{server.url}/api/machines") == {"value": []}
    assert len(server.seen) == 2 and len(sleeps) == 1

    server = remote(("slow", 1.0, OK), OK)
    client, sleeps = api(timeout_seconds=0.3)
    with client, pytest.raises(RequestTimedOut, match=r"ReadTimeout.*no answer in time") as info:
        get(client, f"{server.url}/api/advancedqueries/run", retry_timeouts=False)
    assert info.value.status is None
    assert server.seen == ["/api/advancedqueries/run"] and sleeps == []
    assert client.stats["machines"]["timed_out"] == 1


def test_a_504_is_raised_at_once_when_the_request_must_not_be_sent_again(remote):
    gateway = (504, {}, b'{"error": {"code": "GatewayTimeout", "message": "too slow"}}')
    server = remote(gateway, OK)
    client, sleeps = api()
    with client, pytest.raises(RequestTimedOut, match="504: GatewayTimeout: too slow") as info:
        get(client, f"{server.url}/q", retry_timeouts=False)
    assert info.value.status == 504 and len(server.seen) == 1 and sleeps == []

    server = remote(gateway, OK)
    client, sleeps = api()
    with client:
        assert get(client, f"{server.url}/q") == {"value": []}
    assert len(server.seen) == 2 and len(sleeps) == 1


def test_a_429_waits_the_http_date_it_names(remote):
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    server = remote((429, {"Retry-After": when}, b""), OK)
    client, sleeps = api()
    with client:
        assert get(client, f"{server.url}/api/machines") == {"value": []}
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 30
    assert client.stats["machines"]["throttled"] == 1


def test_other_answers_are_not_retried_even_with_a_retry_after(remote):
    for status in (400, 404, 501):
        server = remote((status, {"Retry-After": "1"}, b'{"error": {"code": "No"}}'), OK)
        client, sleeps = api()
        with client, pytest.raises(HttpStatusError) as info:
            get(client, f"{server.url}/api/machines")
        assert info.value.status == status and len(server.seen) == 1 and sleeps == []


def test_the_retries_of_a_request_are_spent_then_it_fails(remote):
    busy = (503, {}, b"busy")
    server = remote(busy, busy, busy)
    client, sleeps = api(max_retries=2)
    with client, pytest.raises(TransientError, match=r"503: .*gave up after 3 attempts"):
        get(client, f"{server.url}/api/machines")
    assert len(server.seen) == 3 and len(sleeps) == 2


def test_a_download_follows_the_same_policy(remote, tmp_path: Path):
    part = b"\x1f\x8b part bytes"
    server = remote(
        (429, {"Retry-After": "3"}, b""),
        "reset",
        (502, {}, b"bad gateway"),
        (200, {"Content-Type": "application/octet-stream"}, part),
    )
    client, sleeps = api()
    with client:
        size = client.download(f"{server.url}/part-0.json.gz?sig=S", tmp_path / "part")
    assert size == len(part) and (tmp_path / "part").read_bytes() == part
    assert len(server.seen) == 4 and sleeps[0] == 3.0 and len(sleeps) == 3
    assert client.stats["downloads"]["throttled"] == 1
    assert client.stats["downloads"]["retries"] == 2

    server = remote((403, {}, b"AuthenticationFailed"), (404, {}, b"BlobNotFound"))
    client, sleeps = api()
    with client:
        with pytest.raises(LinkExpired):
            client.download(f"{server.url}/part-0.json.gz?sig=S", tmp_path / "part")
        with pytest.raises(HttpStatusError, match="404: BlobNotFound"):
            client.download(f"{server.url}/part-0.json.gz?sig=S", tmp_path / "part")
    assert len(server.seen) == 2 and sleeps == []


def test_a_download_from_an_untrusted_server_is_not_retried(tmp_path: Path):
    trustme = pytest.importorskip("trustme")
    server_ca, other_ca = trustme.CA(), trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert("127.0.0.1").configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            try:
                context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=accept, daemon=True).start()
    verify = ssl.create_default_context()
    other_ca.configure_trust(verify)
    client, sleeps = api(verify=verify, max_retries=6)
    port = listener.getsockname()[1]
    try:
        with client, pytest.raises(CertificateUntrusted, match="not trusted; set ca_bundle"):
            client.download(f"https://127.0.0.1:{port}/part-0.json.gz?sig=S", tmp_path / "p")
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert len(accepted) == 1 and sleeps == []
