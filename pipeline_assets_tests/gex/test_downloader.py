"""The downloader against a real HTTP server on loopback: retries, time-outs, truncated bodies,
the size limit, ETags, gzip detection, reuse of content already downloaded, and the sidecar."""

import dataclasses
import gzip
import hashlib
import http.server
import re
import threading
import time
from pathlib import Path

import pytest
from upath import UPath

from contracts.custody import CompressionType
from pipeline_assets.lib.custody import verify_file
from pipeline_assets.lib.download import DownloadError, detect_compression, download, redact_url

BODY = b'{"timestamp": 1771511400, "ticker": "SPX", "spot": 6050.25}' * 200


class Server:
    """A scripted server: each path has a list of behaviours, used one per request."""

    def __init__(self):
        self.script: dict[str, list[str]] = {}
        self.hits: list[tuple[str, str | None]] = []
        self.bodies: dict[str, bytes] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.hits.append((self.path, self.headers.get("If-None-Match")))
                steps = outer.script.get(self.path, ["ok"])
                step = steps.pop(0) if len(steps) > 1 else steps[0]
                body = outer.bodies.get(self.path, BODY)
                if step == "500":
                    self.send_error(500, "boom")
                elif step == "404":
                    self.send_error(404, "nope")
                elif step == "slow":
                    time.sleep(1.5)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif step == "cut":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                elif step == "nolength":
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(body)
                    self.close_connection = True
                elif step == "etag":
                    if self.headers.get("If-None-Match") == '"v1"':
                        self.send_response(304)
                        self.end_headers()
                        return
                    self.send_response(200)
                    self.send_header("ETag", '"v1"')
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def fetch(url: str, root: Path, **kw):
    opts = {"timeout": 1.0, "attempts": 3, "backoff_base": 0.01, "sleep": lambda s: None}
    opts.update(kw)
    return download(url, root / "downloads", root=root, **opts)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_plain_download_is_stored_with_a_verifiable_sidecar(server, tmp_path):
    result = fetch(server.url("/a.json"), tmp_path)
    assert result.path.read_bytes() == BODY
    assert result.sha256 == hashlib.sha256(BODY).hexdigest()
    assert result.compression is CompressionType.NONE and not result.reused
    record = verify_file(UPath(result.path))
    assert record.source_url == server.url("/a.json") and record.path == "downloads/a.json"
    assert files_in(tmp_path / "downloads") == ["a.json", "a.json.meta.json"]


def test_server_errors_are_retried_with_backoff_then_succeed(server, tmp_path):
    server.script["/flaky.json"] = ["500", "500", "ok"]
    delays = []
    result = fetch(server.url("/flaky.json"), tmp_path, sleep=delays.append)
    assert result.attempts == 3 and result.path.read_bytes() == BODY
    assert len(delays) == 2 and delays[1] > delays[0] * 0.9  # grows (jitter takes at most half)


def test_persistent_server_errors_fail_naming_the_attempts(server, tmp_path):
    server.script["/down.json"] = ["500"]
    with pytest.raises(
        DownloadError, match=r"failed after 3 attempts; last error: HTTP 500"
    ) as info:
        fetch(server.url("/down.json"), tmp_path)
    assert info.value.transient and files_in(tmp_path / "downloads") == []


def test_a_404_is_not_retried(server, tmp_path):
    server.script["/missing.json"] = ["404"]
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server.url("/missing.json"), tmp_path)
    assert len(server.hits) == 1


def test_a_read_time_out_is_retried_and_reported(server, tmp_path):
    server.script["/slow.json"] = ["slow"]
    with pytest.raises(DownloadError, match="timed out|cannot connect") as info:
        fetch(server.url("/slow.json"), tmp_path, timeout=0.3, attempts=2)
    assert info.value.attempts == 2 and files_in(tmp_path / "downloads") == []


def test_a_body_closed_mid_way_leaves_no_file_and_is_retried(server, tmp_path):
    server.script["/cut.json"] = ["cut", "ok"]
    result = fetch(server.url("/cut.json"), tmp_path)
    assert result.attempts == 2 and result.path.read_bytes() == BODY
    server.script["/cut2.json"] = ["cut"]
    with pytest.raises(DownloadError, match="closed mid-body"):
        fetch(server.url("/cut2.json"), tmp_path, attempts=2)
    assert files_in(tmp_path / "downloads") == ["cut.json", "cut.json.meta.json"]


@pytest.mark.parametrize("step", ["ok", "nolength"])
def test_a_body_over_the_size_limit_is_refused_without_a_file(server, tmp_path, step):
    server.script["/big.json"] = [step]
    with pytest.raises(DownloadError, match="larger than the size limit of 1,000 bytes"):
        fetch(server.url("/big.json"), tmp_path, max_bytes=1000)
    assert files_in(tmp_path / "downloads") == []
    assert len(server.hits) == 1  # not retried


def test_an_unchanged_etag_is_not_fetched_again(server, tmp_path):
    server.script["/e.json"] = ["etag"]
    first = fetch(server.url("/e.json"), tmp_path)
    second = fetch(server.url("/e.json"), tmp_path)
    assert first.etag == '"v1"' and not first.reused
    assert second.reused and second.path == first.path
    assert server.hits[-1] == ("/e.json", '"v1"')  # asked with If-None-Match, got 304
    assert files_in(tmp_path / "downloads") == ["e.json", "e.json.meta.json"]


def test_the_same_content_under_another_url_is_not_stored_twice(server, tmp_path):
    first = fetch(server.url("/one.json"), tmp_path)
    second = fetch(server.url("/two.json"), tmp_path)
    assert second.reused and second.path == first.path
    assert files_in(tmp_path / "downloads") == ["one.json", "one.json.meta.json"]


def test_gzip_is_detected_from_the_bytes_with_its_size(server, tmp_path):
    server.bodies["/data.bin"] = gzip.compress(BODY)
    result = fetch(server.url("/data.bin"), tmp_path)
    assert result.compression is CompressionType.GZIP
    assert result.metadata.uncompressed_size_estimate == len(BODY)
    assert detect_compression(b"BZh91AY") is CompressionType.BZIP2
    assert detect_compression(b"\x28\xb5\x2f\xfd\x00") is CompressionType.ZSTD


def test_file_urls_and_credentials_in_urls(tmp_path):
    source = tmp_path / "src" / "x.json"
    source.parent.mkdir()
    source.write_bytes(BODY)
    result = fetch(source.as_uri(), tmp_path)
    assert result.path.read_bytes() == BODY and result.url == source.as_uri()
    with pytest.raises(DownloadError, match="no such file"):
        fetch((tmp_path / "nope.json").as_uri(), tmp_path)
    assert redact_url("https://u:p@api.example.com/SPX/classic?key=s3cret&x=1") == (
        "https://***@api.example.com/SPX/classic?key=***&x=1"
    )


@pytest.mark.parametrize(
    ("steps", "message"), [(["500"], "HTTP 500"), (["slow"], "timed out|cannot connect")]
)
def test_an_enqueue_whose_server_keeps_failing_leaves_a_failed_job_with_the_reason(
    server, importer, data_root, steps, message
):
    # 2 attempts, backoff from 0.01 s (the importer fixture), a read time-out under the 1.5 s
    # the slow answer takes.
    importer.config = dataclasses.replace(importer.config, download_timeout=0.3)
    server.script["/day.json"] = steps
    job = importer.enqueue(server.url("/day.json"), "SPX", "gex_zero")
    assert job.status == "failed" and job.staged_path is None
    assert "after 2 attempts" in job.last_error and re.search(message, job.last_error)
    assert sum(1 for path, _ in server.hits if path == "/day.json") == 2
    assert not (data_root / "parquet").exists()
    assert [e["event"] for e in importer.store.history(job.id)] == ["created", "staging_failed"]
