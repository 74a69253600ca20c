"""A JSON export page saved as JSON lines (``ApiClient.save_odata_page``) against scripted remote
answers (httpx.MockTransport stands in for Defender): its records and next link wherever the
service puts it, its retries, and the memory it takes."""

import tracemalloc

import httpx
import orjson
import pytest

from endpoint_forensics.errors import WireFormatError
from endpoint_forensics.http.client import ApiClient

from .test_http import SCOPE, Tokens, budget, client_for

URL = "https://mde.test/api/machines/SoftwareVulnerabilitiesExport"
RECORDS = [{"id": f"r{i}", "cvssScore": 7.5, "paths": ["C:\\x"], "fixed": None} for i in range(5)]


def _lines(path):
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize(
    "page",
    [
        {"@odata.context": "c", "value": RECORDS, "@odata.nextLink": "https://mde.test/next?$skiptoken=a"},
        {"@odata.nextLink": "https://mde.test/next?$skiptoken=a", "value": RECORDS},
    ],
    ids=["link-after", "link-before"],
)  # fmt: skip
def test_a_page_is_saved_as_json_lines_with_its_link(tmp_path, page):
    client, seen, _ = client_for([(200, page, {})])
    lines = tmp_path / "page.jsonl"
    saved = client.save_odata_page(
        URL, lines, scope=SCOPE, budget=budget(), params={"pageSize": "5"}
    )
    assert saved.next_link == "https://mde.test/next?$skiptoken=a"
    assert saved.count == len(RECORDS) and list(saved.records()) == RECORDS
    assert _lines(lines) == RECORDS
    assert seen[0].url.params["pageSize"] == "5"
    assert [p.name for p in tmp_path.iterdir()] == ["page.jsonl"]  # the body is gone


def test_the_last_page_has_no_link_and_a_missing_value_no_records(tmp_path):
    client, _, _ = client_for([(200, {"value": RECORDS}, {}), (200, {"other": 1}, {})])
    lines = tmp_path / "page.jsonl"
    assert client.save_odata_page(URL, lines, scope=SCOPE, budget=budget()).next_link is None
    assert _lines(lines) == RECORDS
    assert client.save_odata_page(URL, lines, scope=SCOPE, budget=budget()).next_link is None
    assert _lines(lines) == []


def test_an_empty_or_cut_short_body_is_asked_again(tmp_path):
    good = orjson.dumps({"value": RECORDS})
    client, seen, sleeps = client_for(
        [(200, b"", {}), (200, good[: len(good) // 2], {}), (429, {}, {"Retry-After": "3"}),
         (200, good, {})]
    )  # fmt: skip
    lines = tmp_path / "page.jsonl"
    assert client.save_odata_page(URL, lines, scope=SCOPE, budget=budget()).next_link is None
    assert _lines(lines) == RECORDS
    assert len(seen) == 4 and len(sleeps) == 3 and sleeps[2] == 3


def test_an_answer_that_is_not_an_object_is_a_wire_format_error(tmp_path):
    client, _, _ = client_for([(200, RECORDS, {})])
    with pytest.raises(WireFormatError, match="expected an OData object"):
        client.save_odata_page(URL, tmp_path / "page.jsonl", scope=SCOPE, budget=budget())
    assert list(tmp_path.iterdir()) == []


def test_a_page_takes_a_few_records_memory_not_the_pages(tmp_path):
    # 20,000 records of about 700 bytes (14 MB), as a 50,000-record export page is 35 MB.
    record = {"id": "x" * 40, "software": "y" * 500, "cvssScore": 7.5, "paths": ["C:\\z"] * 4}
    body = orjson.dumps({"value": [dict(record, n=i) for i in range(20_000)]})

    class Network(httpx.SyncByteStream):  # the body as a socket gives it, 64 KB at a time
        def __iter__(self):
            for start in range(0, len(body), 65_536):
                yield body[start : start + 65_536]

    def handler(request):
        return httpx.Response(200, stream=Network())

    def peak(call):
        client = ApiClient(Tokens(), transport=httpx.MockTransport(handler))
        tracemalloc.start()
        try:
            call(client)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    lines = tmp_path / "page.jsonl"
    saved = peak(lambda c: c.save_odata_page(URL, lines, scope=SCOPE, budget=budget()))
    whole = peak(lambda c: c.get_odata_page(URL, scope=SCOPE, budget=budget()))
    assert len(_lines(lines)) == 20_000
    # Decoded whole, the page takes more than its size; saved, a few of its chunks.
    assert whole > len(body), (whole, len(body))
    assert saved < len(body) / 4, (saved, len(body))
