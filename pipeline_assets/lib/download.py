"""The downloader: a URL (http, https or file) to a file on disk with its custody sidecar.

- **Bounded memory**: the body is streamed in chunks of `CHUNK_BYTES` to a hidden temporary file
  in the target folder, hashed as it passes, and renamed to its final name only when complete and
  within the limits; an interrupted download leaves no file behind.
- **Limits**: `max_bytes` (a body larger than that is refused, whatever `Content-Length` says),
  `timeout` seconds per connect or read, and `deadline` seconds for the whole transfer.
- **Retries**: transient failures (connection refused or reset, time-outs, a body closed before
  its end, HTTP 408, 425, 429 and 5xx) are retried with exponential backoff; others (4xx, the size
  limit, a missing file) fail at once. The error names the URL (credentials removed), the attempts
  and the last failure.
- **Compression** is detected from the first bytes (gzip, bz2, zstd, none), never from the name.
- **Already downloaded**: the folder's sidecars are the index. A URL whose last download sent an
  ETag is asked `If-None-Match`; a 304 (or the same ETag in the answer) reuses that file without
  reading the body. Content whose SHA256 equals a file already in the folder is not stored again:
  the existing file is returned (`reused=True`).
- **Custody**: every stored file gets `<name>.meta.json`, a `DownloadMetadata` record.

No Dagster here: the GEX import, the CLI and the chain-of-custody tools all call `download`.
"""

from __future__ import annotations

import http.client
import os
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from contracts.custody import CompressionType, DownloadMetadata
from pipeline_assets.lib.custody import (
    SIDECAR_SUFFIX,
    CustodyError,
    MetadataFactory,
    read_sidecar,
    write_sidecar,
)
from pipeline_assets.lib.files import HashingWriter, as_upath, temp_path_for
from pipeline_assets.lib.versions import CODE_VERSION

CHUNK_BYTES = 1 << 20
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF_BASE = 0.5
DEFAULT_BACKOFF_CAP = 8.0
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "pipeline-assets-downloader/1.0"

# Query parameters that carry credentials (gexbot's classic API takes `?key=`).
_SECRET_PARAMS = re.compile(
    r"(key|token|secret|password|passwd|pwd|signature|sig|auth|credential)", re.IGNORECASE
)

_MAGIC: tuple[tuple[bytes, CompressionType], ...] = (
    (b"\x1f\x8b", CompressionType.GZIP),
    (b"BZh", CompressionType.BZIP2),
    (b"\x28\xb5\x2f\xfd", CompressionType.ZSTD),
)


class DownloadError(Exception):
    """A download failed; `transient` says whether it was given up on after retries."""

    def __init__(self, message: str, *, url: str, attempts: int = 1, transient: bool = False):
        super().__init__(message)
        self.url = url
        self.attempts = attempts
        self.transient = transient


class _Transient(Exception):
    """A failure worth another attempt."""


class _NotModified(Exception):
    """The server says the copy we hold is current."""


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    sidecar: Path
    sha256: str
    size_bytes: int
    compression: CompressionType
    etag: str | None
    url: str  # redacted
    attempts: int
    reused: bool  # True when nothing new was stored (same ETag or same SHA256 as an earlier file)
    metadata: DownloadMetadata


def redact_url(url: str) -> str:
    """The URL without user-info and with credential-looking query values replaced by `***`."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username or parts.password:
        netloc = "***@" + netloc
    query = urllib.parse.urlencode(
        [
            (name, "***" if _SECRET_PARAMS.search(name) else value)
            for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def detect_compression(head: bytes) -> CompressionType:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return CompressionType.NONE


def _uncompressed_estimate(path: Path, compression: CompressionType, size: int) -> int | None:
    if compression is CompressionType.NONE:
        return size
    if compression is CompressionType.GZIP and size >= 18:
        # ISIZE: the last four bytes hold the uncompressed size modulo 2**32 (exact below 4 GiB).
        with open(path, "rb") as handle:
            handle.seek(-4, os.SEEK_END)
            return int.from_bytes(handle.read(4), "little")
    return None


@dataclass(frozen=True)
class _Known:
    path: Path
    record: DownloadMetadata


def known_downloads(folder: Path) -> list[_Known]:
    """Every download in `folder` whose file and sidecar are both there."""
    found = []
    if not folder.is_dir():
        return found
    for sidecar in sorted(folder.glob(f"*{SIDECAR_SUFFIX}")):
        data = sidecar.with_name(sidecar.name[: -len(SIDECAR_SUFFIX)])
        if not data.is_file():
            continue
        record = _readable_record(data)
        if isinstance(record, DownloadMetadata):
            found.append(_Known(data, record))
    return found


def _readable_record(data: Path) -> object:
    # A broken sidecar is simply not in the index (the trace tools report it).
    try:
        return read_sidecar(as_upath(data))
    except (CustodyError, OSError):
        return None


@dataclass
class _Opened:
    stream: BinaryIO
    etag: str | None
    length: int | None
    close: Callable[[], None]


def _open(url: str, *, timeout: float, etag: str | None, headers: dict[str, str]) -> _Opened:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the caller through `close`
        except FileNotFoundError as exc:
            raise DownloadError(f"{path}: no such file", url=redact_url(url)) from exc
        except IsADirectoryError as exc:
            raise DownloadError(f"{path}: is a folder, not a file", url=redact_url(url)) from exc
        return _Opened(handle, None, os.fstat(handle.fileno()).st_size, handle.close)
    if scheme not in ("http", "https"):
        raise DownloadError(
            f"unsupported URL scheme {scheme!r}: expected http, https or file", url=redact_url(url)
        )
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    if etag:
        request.add_header("If-None-Match", etag)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 304:
            raise _NotModified() from None
        message = f"HTTP {exc.code} {exc.reason}"
        if exc.code in TRANSIENT_HTTP:
            raise _Transient(message) from None
        raise DownloadError(message, url=redact_url(url)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Transient(f"cannot connect: {reason}") from None
    length = response.headers.get("Content-Length")
    return _Opened(
        response,
        response.headers.get("ETag"),
        int(length) if length and length.isdigit() else None,
        response.close,
    )


def _chunks(opened: _Opened, *, max_bytes: int, deadline_at: float) -> Iterator[bytes]:
    received = 0
    while True:
        if time.monotonic() > deadline_at:
            raise _Transient(
                f"the transfer took longer than its deadline ({received:,} bytes received)"
            )
        try:
            chunk = opened.stream.read(CHUNK_BYTES)
        except TimeoutError as exc:
            raise _Transient(
                f"timed out reading the body after {received:,} bytes ({exc})"
            ) from None
        except (http.client.IncompleteRead, ConnectionError, OSError) as exc:
            raise _Transient(
                f"the connection closed mid-body after {received:,} bytes ({type(exc).__name__}: {exc})"
            ) from None
        if not chunk:
            break
        received += len(chunk)
        if received > max_bytes:
            raise DownloadError(
                f"larger than the size limit of {max_bytes:,} bytes (more than {received - len(chunk):,} bytes "
                "received)",
                url="",
            )
        yield chunk
    if opened.length is not None and received < opened.length:
        raise _Transient(
            f"the connection closed mid-body after {received:,} of {opened.length:,} bytes"
        )


def download(
    url: str,
    folder: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str],
    filename: str | Callable[[Path], str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_base: float = DEFAULT_BACKOFF_BASE,
    backoff_cap: float = DEFAULT_BACKOFF_CAP,
    read_only: bool = False,
    headers: dict[str, str] | None = None,
    run_id: str | None = None,
    code_version: str = CODE_VERSION,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
) -> DownloadResult:
    """Download `url` into `folder` (under `root`, for the sidecar's relative path).

    `filename` is the final name, or a function of the completed temporary file that returns it
    (to name a file by what it holds); by default the URL's last path segment.
    """
    target_dir = Path(folder)
    target_dir.mkdir(parents=True, exist_ok=True)
    safe_url = redact_url(url)
    factory = MetadataFactory(root, code_version=code_version)
    known = known_downloads(target_dir)
    previous = next(
        (k for k in reversed(known) if k.record.source_url == safe_url and k.record.etag), None
    )
    total_deadline = deadline if deadline is not None else max(timeout * 10, 60.0)

    last_error = ""
    for attempt in range(1, attempts + 1):
        try:
            return _attempt(
                url,
                target_dir,
                factory=factory,
                known=known,
                previous=previous,
                filename=filename,
                max_bytes=max_bytes,
                timeout=timeout,
                deadline_at=time.monotonic() + total_deadline,
                read_only=read_only,
                headers=headers or {},
                run_id=run_id,
                attempt=attempt,
            )
        except _Transient as exc:
            last_error = str(exc)
            if attempt == attempts:
                break
            delay = min(backoff_cap, backoff_base * 2 ** (attempt - 1))
            delay *= 0.5 + random.random() / 2  # jitter downwards, so the cap holds
            if log:
                log(
                    f"{safe_url}: attempt {attempt} of {attempts} failed ({last_error}); retrying in {delay:.2f}s"
                )
            sleep(delay)
        except DownloadError as exc:
            raise DownloadError(
                f"{safe_url}: {exc} (attempt {attempt} of {attempts})",
                url=safe_url,
                attempts=attempt,
            ) from None
    raise DownloadError(
        f"{safe_url}: failed after {attempts} attempts; last error: {last_error}",
        url=safe_url,
        attempts=attempts,
        transient=True,
    )


def _attempt(
    url: str,
    target_dir: Path,
    *,
    factory: MetadataFactory,
    known: list[_Known],
    previous: _Known | None,
    filename: str | Callable[[Path], str] | None,
    max_bytes: int,
    timeout: float,
    deadline_at: float,
    read_only: bool,
    headers: dict[str, str],
    run_id: str | None,
    attempt: int,
) -> DownloadResult:
    safe_url = redact_url(url)
    try:
        opened = _open(
            url, timeout=timeout, etag=previous.record.etag if previous else None, headers=headers
        )
    except _NotModified:
        assert previous is not None
        return _reuse(previous, attempt)
    try:
        if previous and opened.etag and opened.etag == previous.record.etag:
            return _reuse(previous, attempt)
        if opened.length is not None and opened.length > max_bytes:
            raise DownloadError(
                f"larger than the size limit of {max_bytes:,} bytes (Content-Length {opened.length:,})",
                url=safe_url,
            )
        provisional = filename if isinstance(filename, str) else _url_name(url)
        temp = temp_path_for(target_dir / provisional)
        try:
            with open(temp, "wb") as raw:
                out = HashingWriter(raw)
                head = b""
                for chunk in _chunks(opened, max_bytes=max_bytes, deadline_at=deadline_at):
                    if len(head) < 8:
                        head += chunk[:8]
                    out.write(chunk)
                raw.flush()
                os.fsync(raw.fileno())
            sha256, size = out.hexdigest, out.bytes_written
            same = next((k for k in known if k.record.sha256 == sha256), None)
            if same is not None:
                temp.unlink()
                return _reuse(same, attempt)
            compression = detect_compression(head)
            final = _publish(
                temp, target_dir, filename if callable(filename) else (lambda _: provisional)
            )
            if final is None:
                raise DownloadError(
                    f"{target_dir / provisional} already exists with other content; refusing to "
                    "overwrite a download",
                    url=safe_url,
                )
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    finally:
        opened.close()
    if read_only:
        final.chmod(0o444)
    record = factory.download(
        as_upath(final),
        source_url=safe_url,
        compression=compression,
        etag=opened.etag,
        uncompressed_size_estimate=_uncompressed_estimate(final, compression, size),
        sha256=sha256,
        size_bytes=size,
        run_id=run_id,
    )
    sidecar = Path(str(write_sidecar(as_upath(final), record)))
    return DownloadResult(
        final, sidecar, sha256, size, compression, opened.etag, safe_url, attempt, False, record
    )


def _publish(temp: Path, folder: Path, name_of: Callable[[Path], str]) -> Path | None:
    """Give the complete temporary file its final name, never replacing an existing file.

    A hard link fails when the name is taken (two downloads finishing at once), so the name is
    asked for again; a name function that sees the file taken picks another.
    """
    for _ in range(3):
        final = folder / name_of(temp)
        try:
            os.link(temp, final)
        except FileExistsError:
            continue
        temp.unlink()
        return final
    return None


def _reuse(known: _Known, attempt: int) -> DownloadResult:
    record = known.record
    return DownloadResult(
        known.path,
        known.path.with_name(known.path.name + SIDECAR_SUFFIX),
        record.sha256,
        record.compressed_size,
        record.compression,
        record.etag,
        record.source_url,
        attempt,
        True,
        record,
    )


def _url_name(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or "download"
