"""`POST /gex_history_url` on loopback: enqueue, skip by checksum, and refused requests."""

import http.client
import json
import threading

import pytest

from pipeline_assets.lib.gex.server import MAX_BODY_BYTES, make_server
from pipeline_assets_tests.gex.conftest import snapshot, write_json


@pytest.fixture
def server(importer):
    srv = make_server(importer, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def post(server, body, content_type="application/json", path="/gex_history_url"):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Type": content_type})
    response = conn.getresponse()
    status, payload = response.status, json.loads(response.read())
    conn.close()
    return status, payload


def test_a_file_posted_twice_is_skipped_by_checksum_the_second_time(server, importer, sources):
    src = write_json(sources, "spx.json", [snapshot()])
    status, job = post(server, {"url": src.as_uri(), "ticker": "SPX", "endpoint": "gex_zero"})
    assert status == 202 and (job["status"], job["skipped"]) == ("pending", False)
    assert importer.import_job(job["id"]).status == "completed"
    copy = write_json(sources, "again.json", src.read_text())
    status, again = post(server, {"url": copy.as_uri(), "ticker": "SPX", "endpoint": "gex_zero"})
    assert status == 200 and (again["status"], again["skipped"], again["duplicate_of"]) == (
        "skipped",
        True,
        job["id"],
    )
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    conn.request("GET", f"/gex_history_url/{job['id']}")
    assert json.loads(conn.getresponse().read())["status"] == "completed"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"url=x", "application/x-www-form-urlencoded", 415, "expected application/json"),
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"[1]", "application/json", 400, "expected a JSON object"),
        (
            {"url": "file:///x"},
            "application/json",
            400,
            "missing or not a string: ticker, endpoint",
        ),
        (
            {"url": "file:///x", "ticker": "../up", "endpoint": "gex_zero"},
            "application/json",
            400,
            "'..'",
        ),
        (
            {"url": "ftp://host/x", "ticker": "SPX", "endpoint": "gex_zero"},
            "application/json",
            400,
            "expected an http",
        ),
        (b"{" + b" " * (MAX_BODY_BYTES + 1) + b"}", "application/json", 413, "the limit is"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(
    server, importer, body, content_type, status, message
):
    got, payload = post(server, body, content_type)
    assert got == status and message in payload["error"]
    assert importer.store.jobs() == []


def test_a_failed_download_answers_502_with_the_job(server, sources):
    status, job = post(
        server, {"url": (sources / "absent.json").as_uri(), "ticker": "SPX", "endpoint": "gex_zero"}
    )
    assert status == 502 and job["status"] == "failed" and "no such file" in job["last_error"]
