"""Connections to the source PostgreSQL: the embedded server, DSN redaction, connects with retry.

Plain Python on purpose (no dagster imports) so the CLI, scripts and tests can use it directly.
Passwords never reach a log line or an exception message from this module: every DSN is passed
through `redact_dsn` and every driver error through `_scrub` before it is shown.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote

import psutil
import psycopg

from pipeline_assets.lib.files import exclusive_file_lock

logger = logging.getLogger(__name__)

# Keys whose values are secrets, in both DSN forms (sslpassword unlocks a client key).
_SECRET_KEYS = frozenset({"password", "sslpassword"})
_URI_PREFIX = re.compile(r"^(postgres(?:ql)?://)", re.IGNORECASE)
_MASK = "***"
# For malformed key=value strings, where word boundaries cannot be trusted: a secret key and
# its value, quoted, or else everything up to the end of the string.
_LOOSE_SECRET = re.compile(
    r"\b(?:ssl)?password\s*=\s*('(?:[^'\\]|\\.)*'|.*)", re.IGNORECASE | re.DOTALL
)

# Folders this process has already reported on, so repeated get_dsn() calls log once.
_announced: set[Path] = set()


class SourceUnavailableError(RuntimeError):
    """The source database could not be reached after every connect attempt."""

    def __init__(self, message: str, *, dsn: str, attempts: int, last_error: str) -> None:
        super().__init__(message)
        self.dsn = dsn  # redacted
        self.attempts = attempts
        self.last_error = last_error  # scrubbed


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL server could not be started or reached."""


# --------------------------------------------------------------------------------------------
# Redaction


def _kv_pairs(dsn: str) -> list[tuple[str, str, str]] | None:
    """Split a key=value conninfo the way libpq does: (key, decoded value, raw pair text).

    Returns None when the string is not well formed, so callers can fall back to a blunter
    redaction instead of guessing.
    """
    pairs: list[tuple[str, str, str]] = []
    i, n = 0, len(dsn)
    while True:
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n:
            return pairs
        start = i
        while i < n and dsn[i] != "=" and not dsn[i].isspace():
            i += 1
        key = dsn[start:i]
        while i < n and dsn[i].isspace():
            i += 1
        if not key or i >= n or dsn[i] != "=":
            return None
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        value: list[str] = []
        if i < n and dsn[i] == "'":
            i += 1
            while True:
                if i >= n:
                    return None  # unterminated quote
                ch = dsn[i]
                if ch == "\\" and i + 1 < n:
                    value.append(dsn[i + 1])
                    i += 2
                    continue
                i += 1
                if ch == "'":
                    break
                value.append(ch)
        else:
            while i < n and not dsn[i].isspace():
                if dsn[i] == "\\" and i + 1 < n:
                    value.append(dsn[i + 1])
                    i += 2
                    continue
                value.append(dsn[i])
                i += 1
        pairs.append((key, "".join(value), dsn[start:i]))


def _split_uri(dsn: str) -> tuple[str, str, str, str] | None:
    """(prefix, userinfo, hosts-and-path, query) of a libpq URI, or None if it is not a URI."""
    m = _URI_PREFIX.match(dsn)
    if m is None:
        return None
    prefix, rest = m.group(1), dsn[m.end() :]
    userinfo = ""
    first_at = rest.find("@")
    head = rest[:first_at] if first_at >= 0 else ""
    # An '@' after both a '/' and a '?' sits in a query value, not in credentials. Anything
    # else counts as credentials, so a password with a raw '/' or '?' is still hidden.
    if first_at >= 0 and not ("/" in head and "?" in head):
        ends = [p for p in (rest.find("/", first_at), rest.find("?", first_at)) if p >= 0]
        boundary = min(ends) if ends else len(rest)
        # A raw '@' inside a password: the credentials end at the last '@' before the host.
        last_at = rest.rfind("@", first_at, boundary)
        userinfo, rest = rest[:last_at], rest[last_at + 1 :]
    main, sep, query = rest.partition("?")
    return prefix, userinfo, main, query if sep else ""


def _uri_query_pairs(query: str) -> list[tuple[str, str, str]]:
    pairs = []
    for raw in query.split("&"):
        key, _, value = raw.partition("=")
        pairs.append((unquote(key), unquote(value), raw))
    return pairs


def _secrets(dsn: str) -> set[str]:
    """Every spelling of every secret in the DSN (raw, decoded, percent-encoded)."""
    found: set[str] = set()
    uri = _split_uri(dsn)
    if uri is not None:
        _, userinfo, _, query = uri
        if ":" in userinfo:
            raw = userinfo.split(":", 1)[1]
            found |= {raw, unquote(raw)}
        for key, value, raw in _uri_query_pairs(query) if query else []:
            if key.lower() in _SECRET_KEYS:
                found |= {value, raw.partition("=")[2]}
    else:
        pairs = _kv_pairs(dsn)
        if pairs is None:
            # Malformed: take whatever follows a secret key, quoted or not.
            for m in _LOOSE_SECRET.finditer(dsn):
                value = m.group(1)
                # libpq's parse errors quote single words of the string, so mask each one.
                found |= {value, value.strip("'"), *value.split()}
        for key, value, raw in pairs or []:
            if key.lower() in _SECRET_KEYS:
                found |= {value, raw.partition("=")[2].strip()}
    found |= {quote(s, safe="") for s in set(found)}
    return {s for s in found if s}


def redact_dsn(dsn: str) -> str:
    """The DSN with any password removed, in URI or key=value form."""
    uri = _split_uri(dsn)
    if uri is not None:
        prefix, userinfo, main, query = uri
        user = userinfo.split(":", 1)[0]
        out = prefix + (f"{user}@" if user else "") + main
        if query:
            kept = [
                raw for key, _, raw in _uri_query_pairs(query) if key.lower() not in _SECRET_KEYS
            ]
            if kept:
                out += "?" + "&".join(kept)
        return out
    pairs = _kv_pairs(dsn)
    if pairs is not None:
        return " ".join(raw for key, _, raw in pairs if key.lower() not in _SECRET_KEYS)
    # Malformed: drop a secret key's quoted value, or all that follows it, rather than risk
    # showing part of it.
    return _LOOSE_SECRET.sub("", dsn).strip()


def _scrub(text: str, dsn: str) -> str:
    """`text` (a driver error, say) with the DSN and its secrets masked."""
    if dsn:
        text = text.replace(dsn, redact_dsn(dsn))
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted(_secrets(dsn), key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text


# --------------------------------------------------------------------------------------------
# Connecting


def connect_with_retry(
    dsn: str,
    *,
    attempts: int = 5,
    backoff_seconds: float = 0.5,
    max_backoff_seconds: float = 8.0,
    connect_timeout: int = 10,
    on_retry: Callable[[int, float, psycopg.OperationalError], None] | None = None,
) -> psycopg.Connection:
    """Connect with psycopg, retrying transient failures with capped exponential backoff.

    `on_retry(attempt, delay, error)` is called after each failed attempt that will be
    retried; `error` is an OperationalError whose text has the password scrubbed out.
    Raises SourceUnavailableError once `attempts` connects have failed.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    last_error = ""
    for attempt in range(1, attempts + 1):
        try:
            return psycopg.connect(dsn, connect_timeout=connect_timeout)
        except psycopg.OperationalError as exc:
            last_error = _scrub(str(exc), dsn).strip()
        except psycopg.Error as exc:
            # A bad DSN or option will not heal; the driver's text can quote DSN fragments.
            raise ValueError(
                f"cannot connect to {redact_dsn(dsn)}: {_scrub(str(exc), dsn).strip()}"
            ) from None
        if attempt == attempts:
            break
        # Jitter (down only, so the cap holds) keeps runs that failed together out of lockstep.
        delay = min(max_backoff_seconds, backoff_seconds * 2 ** (attempt - 1))
        delay *= random.uniform(0.9, 1.0)
        if on_retry is not None:
            on_retry(attempt, delay, psycopg.OperationalError(last_error))
        time.sleep(delay)
    redacted = redact_dsn(dsn)
    raise SourceUnavailableError(
        f"could not connect to {redacted} after {attempts} attempt"
        f"{'s' if attempts != 1 else ''}; last error: {last_error}",
        dsn=redacted,
        attempts=attempts,
        last_error=last_error,
    ) from None


# --------------------------------------------------------------------------------------------
# Embedded server


def _startup_lock_timeout(path: Path, timeout: float) -> Exception:
    return EmbeddedPostgresError(
        f"timed out after {timeout:.0f}s waiting for {path}; another process "
        "is starting the embedded PostgreSQL server and has not finished"
    )


def _running_pid(pgdata: Path) -> int | None:
    """Pid of a ready postmaster for `pgdata`, read from its postmaster.pid, else None."""
    from pgserver.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, OSError):
        return None  # half-written or unreadable pid file: treat as not running
    if info is None or not info.is_running() or info.status != "ready":
        return None
    try:
        # A postmaster that died but was not yet reaped still "runs" as far as psutil knows.
        if info.process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return info.pid


def _log_tail(pgdata: Path, lines: int = 20) -> str:
    log_file = pgdata / "log"
    try:
        tail = log_file.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\nlast lines of {log_file}:\n" + "\n".join(tail) if tail else ""


def embedded_dsn(pgdata_dir: Path, *, lock_timeout: float = 120.0) -> str:
    """Start, or reuse if already running, the embedded PostgreSQL in `pgdata_dir`; its URI.

    The server outlives this process (pgserver cleanup_mode=None), so later runs reuse it.
    """
    import pgserver  # imported here: loading it probes the runtime dir, needless for remote DSNs

    pgdata = Path(pgdata_dir).expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    lock_path = pgdata.with_name(pgdata.name + ".lock")
    with exclusive_file_lock(lock_path, lock_timeout, _startup_lock_timeout):
        if pgdata.is_dir() and any(pgdata.iterdir()) and not (pgdata / "PG_VERSION").exists():
            raise EmbeddedPostgresError(
                f"cannot start the embedded PostgreSQL in {pgdata}: the folder is not empty and "
                "is not a PostgreSQL data folder; point the setting at an empty or new folder"
            )
        pid_before = _running_pid(pgdata)
        try:
            server = pgserver.get_server(pgdata, cleanup_mode=None)
            # pgserver caches one handle per folder per process; if the server was stopped
            # since, that handle is stale, so start it again.
            if _running_pid(pgdata) is None:
                server.ensure_postgres_running()
            uri = server.get_uri()
        except EmbeddedPostgresError:
            raise
        except Exception as exc:
            raise EmbeddedPostgresError(
                f"cannot start the embedded PostgreSQL in {pgdata}: {type(exc).__name__}: {exc}"
                f"{_log_tail(pgdata)}"
            ) from exc
        pid = _running_pid(pgdata)
        # A postmaster.pid naming a live but unrelated process (a reused pid after a reboot)
        # makes pgserver believe a server runs; a real connect is the only honest check.
        try:
            with psycopg.connect(uri, connect_timeout=5) as conn:
                conn.execute("select 1")
        except psycopg.Error as exc:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL in {pgdata} does not answer at {redact_dsn(uri)}: "
                f"{_scrub(str(exc), uri).strip()}; if no PostgreSQL runs for this folder, "
                f"remove {pgdata / 'postmaster.pid'} and retry{_log_tail(pgdata)}"
            ) from None

    level = logging.DEBUG if pgdata in _announced else logging.INFO
    _announced.add(pgdata)
    if pid_before is None:
        logger.info(
            "started embedded PostgreSQL in %s (pid %s) at %s", pgdata, pid, redact_dsn(uri)
        )
    else:
        logger.log(
            level, "reusing embedded PostgreSQL in %s (pid %s) at %s", pgdata, pid, redact_dsn(uri)
        )
    return uri


__all__ = [
    "EmbeddedPostgresError",
    "SourceUnavailableError",
    "connect_with_retry",
    "embedded_dsn",
    "redact_dsn",
]


def stop_embedded(pgdata_dir: str | Path, *, timeout: int = 30) -> bool:
    """Stop the embedded server of this folder, if one runs; returns whether it was running."""
    from pgserver._commands import pg_ctl

    pgdata_dir = Path(pgdata_dir)
    if not (pgdata_dir / "postmaster.pid").exists():
        return False
    # pg_ctl refuses to run as root; as root, pgserver runs the server as its 'pgserver' user.
    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata_dir, user=user, timeout=timeout)
    logger.info("stopped embedded PostgreSQL in %s", pgdata_dir)
    return True
