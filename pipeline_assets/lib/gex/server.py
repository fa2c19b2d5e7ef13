"""`pipeline gex serve`: the HTTP endpoint `POST /gex_history_url` (loopback by default).

Body: JSON `{"url": ..., "ticker": ..., "endpoint": ...}` with `Content-Type: application/json`,
at most `MAX_BODY_BYTES`. The answer is the job as JSON with `id`, `status` and `skipped`:

- 202 a pending job (staged, waiting for the sensor or `pipeline gex import`);
- 200 a skipped job (its content was already imported or queued);
- 502 a job whose download failed (its `last_error` says why);
- 400 a refused request (bad JSON, a field missing, a ticker or endpoint with `/` or `..`),
  411 no Content-Length, 413 a body over the limit, 415 not JSON, 404 another path.

`GET /gex_history_url/<id>` answers with one job. Requests are served on threads; the store's
file lock serialises their writes.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline_assets.lib.gex.imports import GexImporter
from pipeline_assets.lib.gex.store import FAILED, SKIPPED, GexInputError

PATH = "/gex_history_url"
MAX_BODY_BYTES = 16 * 1024
_JOB_PATH = re.compile(rf"^{PATH}/(\d+)$")


def make_handler(importer: GexImporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pipeline-gex/1.0"

        def _answer(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = (json.dumps(body, sort_keys=True) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: HTTPStatus, message: str) -> None:
            self._answer(status, {"error": message})

        def log_message(self, format: str, *args: Any) -> None:
            importer.log(f"http {self.address_string()} " + format % args)

        def do_GET(self) -> None:
            match = _JOB_PATH.match(self.path)
            if not match:
                return self._error(
                    HTTPStatus.NOT_FOUND, f"no such path {self.path!r}; use POST {PATH}"
                )
            try:
                self._answer(HTTPStatus.OK, importer.store.job(int(match.group(1))).as_json())
            except GexInputError as exc:
                self._error(HTTPStatus.NOT_FOUND, str(exc))

        def do_POST(self) -> None:
            if self.path != PATH:
                return self._error(
                    HTTPStatus.NOT_FOUND, f"no such path {self.path!r}; use POST {PATH}"
                )
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return self._error(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    f"Content-Type is {ctype or 'missing'!r}; expected application/json",
                )
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                return self._error(
                    HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required"
                )
            if int(length) > MAX_BODY_BYTES:
                self.close_connection = True
                return self._error(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"the body is {int(length):,} bytes; the limit is {MAX_BODY_BYTES:,}",
                )
            try:
                body = json.loads(self.rfile.read(int(length)))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                return self._error(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {exc}")
            if not isinstance(body, dict):
                return self._error(
                    HTTPStatus.BAD_REQUEST, "expected a JSON object with url, ticker and endpoint"
                )
            missing = [
                k
                for k in ("url", "ticker", "endpoint")
                if not isinstance(body.get(k), str) or not body[k]
            ]
            if missing:
                return self._error(
                    HTTPStatus.BAD_REQUEST, f"missing or not a string: {', '.join(missing)}"
                )
            try:
                job = importer.enqueue(body["url"], body["ticker"], body["endpoint"])
            except GexInputError as exc:
                return self._error(HTTPStatus.BAD_REQUEST, str(exc))
            status = {SKIPPED: HTTPStatus.OK, FAILED: HTTPStatus.BAD_GATEWAY}.get(
                job.status, HTTPStatus.ACCEPTED
            )
            self._answer(status, job.as_json())

    return Handler


def make_server(
    importer: GexImporter, host: str = "127.0.0.1", port: int = 8765
) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(importer))
    server.daemon_threads = True
    return server
