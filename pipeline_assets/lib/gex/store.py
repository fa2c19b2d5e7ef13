"""The GEX job store (`gex_history.db`, table `import_jobs` and its history) and the writer lock.

DuckDB allows one writing process per file. Every access to `gex_history.db` and `gex_data.db`,
from an asset run, the CLI or the HTTP server, goes through `GexPaths.lock()`, an exclusive
`flock` on `<data root>/gex.lock` (per open file, so threads of one process exclude each other
too): concurrent enqueues and imports wait for each other instead of meeting DuckDB's lock error.
Connections live only inside the lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from pipeline_assets.lib.files import exclusive_file_lock

HISTORY_DB = "gex_history.db"
DATA_DB = "gex_data.db"
LOCK_FILE = "gex.lock"
PARQUET_DIR = "parquet/gex"
ARCHIVE_DIR = "archive/gex"
DEFAULT_LOCK_TIMEOUT = 600.0

PENDING, COMPLETED, FAILED, SKIPPED, SUPERSEDED = (
    "pending",
    "completed",
    "failed",
    "skipped",
    "superseded",
)
STATUSES = (PENDING, COMPLETED, FAILED, SKIPPED, SUPERSEDED)

# Tickers and endpoints become folder and file names: letters, digits, `_`, `-`, `.` only, and
# never `..`, so neither can leave its folder.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class GexInputError(ValueError):
    """A request the store refuses (a bad ticker or endpoint, an unknown job)."""


class GexLockTimeout(TimeoutError):
    """Another writer held the GEX lock for longer than the time-out."""


def validate_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or "/" in value or "\\" in value or ".." in value:
        raise GexInputError(
            f"{kind} {value!r} is refused: it must not contain a path separator or '..'"
        )
    if not _NAME.match(value):
        raise GexInputError(
            f"{kind} {value!r} is refused: expected 1 to 64 letters, digits, '_', '-' or '.', starting "
            "with a letter or digit"
        )
    return value


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class GexPaths:
    """Where the GEX import keeps its files, under the data root (fixed by the design)."""

    data_root: Path

    @property
    def history_db(self) -> Path:
        return self.data_root / HISTORY_DB

    @property
    def data_db(self) -> Path:
        return self.data_root / DATA_DB

    @property
    def staging_dir(self) -> Path:
        return self.data_root / "source" / "gexbot"

    @property
    def parquet_root(self) -> Path:
        return self.data_root / PARQUET_DIR

    @property
    def archive_dir(self) -> Path:
        return self.data_root / ARCHIVE_DIR

    @property
    def lock_path(self) -> Path:
        return self.data_root / LOCK_FILE

    @contextlib.contextmanager
    def lock(self, timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
        """Hold the single-writer lock of the GEX DuckDB files."""
        with exclusive_file_lock(self.lock_path, timeout, _gex_lock_timeout):
            yield


def _gex_lock_timeout(path: Path, timeout: float) -> Exception:
    return GexLockTimeout(
        f"waited {timeout:.0f}s for {path}: another GEX import or enqueue holds it"
    )


@dataclass
class ImportJob:
    """One row of `import_jobs`."""

    id: int
    url: str
    ticker: str
    endpoint: str
    status: str
    checksum: str | None = None
    records_processed: int | None = None
    rows_written: int | None = None
    last_error: str | None = None
    staged_path: str | None = None  # relative to the data root
    skipped: bool = False
    duplicate_of: int | None = None
    corrects_job_id: int | None = None
    reason: str | None = None
    canonical_files: list[str] = field(default_factory=list)  # relative to the data root
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    @property
    def partition_key(self) -> str:
        return str(self.id)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("created_at", "updated_at"):
            value = out[name]
            out[name] = value.isoformat() + "Z" if value is not None else None
        return out


_COLUMNS = (
    "id", "url", "ticker", "endpoint", "status", "checksum", "records_processed", "rows_written",
    "last_error", "staged_path", "skipped", "duplicate_of", "corrects_job_id", "reason",
    "canonical_files", "created_at", "updated_at",
)  # fmt: skip

_SCHEMA = """
CREATE TABLE IF NOT EXISTS import_jobs (
    id BIGINT PRIMARY KEY,
    url VARCHAR NOT NULL,
    ticker VARCHAR NOT NULL,
    endpoint VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    checksum VARCHAR,
    records_processed BIGINT,
    rows_written BIGINT,
    last_error VARCHAR,
    staged_path VARCHAR,
    skipped BOOLEAN NOT NULL DEFAULT false,
    duplicate_of BIGINT,
    corrects_job_id BIGINT,
    reason VARCHAR,
    canonical_files VARCHAR NOT NULL DEFAULT '[]',
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS import_job_history (
    job_id BIGINT NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    event VARCHAR NOT NULL,
    status VARCHAR,
    reason VARCHAR,
    details VARCHAR
);
"""


class JobStore:
    """Reads and writes `import_jobs`; every method takes the lock for its own short transaction.

    Timestamps are UTC (stored as DuckDB TIMESTAMP without zone).
    """

    def __init__(self, paths: GexPaths, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT):
        self.paths = paths
        self.lock_timeout = lock_timeout

    @contextlib.contextmanager
    def connect(self, *, locked: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to gex_history.db (with the lock held unless the caller already holds it)."""
        guard = self.paths.lock(self.lock_timeout) if locked else contextlib.nullcontext()
        with guard:
            con = duckdb.connect(str(self.paths.history_db))
            try:
                con.execute(_SCHEMA)
                yield con
            finally:
                con.close()

    @staticmethod
    def _row_to_job(row: tuple[Any, ...]) -> ImportJob:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["canonical_files"] = json.loads(values["canonical_files"] or "[]")
        return ImportJob(**values)

    def _select(
        self, con: duckdb.DuckDBPyConnection, where: str = "", params: list[Any] | None = None
    ) -> list[ImportJob]:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM import_jobs {where} ORDER BY id"
        return [self._row_to_job(r) for r in con.execute(sql, params or []).fetchall()]

    def create(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        url: str,
        ticker: str,
        endpoint: str,
        corrects_job_id: int | None = None,
        reason: str | None = None,
    ) -> ImportJob:
        now = utc_now()
        (next_id,) = con.execute("SELECT coalesce(max(id), 0) + 1 FROM import_jobs").fetchone()
        con.execute(
            "INSERT INTO import_jobs (id, url, ticker, endpoint, status, corrects_job_id, reason, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [next_id, url, ticker, endpoint, PENDING, corrects_job_id, reason, now, now],
        )
        self.record(con, next_id, "created", PENDING, reason=reason, details={"url": url})
        return self.get(con, next_id)

    def get(self, con: duckdb.DuckDBPyConnection, job_id: int) -> ImportJob:
        jobs = self._select(con, "WHERE id = ?", [job_id])
        if not jobs:
            raise GexInputError(f"no GEX import job with id {job_id}")
        return jobs[0]

    def find(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        status: str | None = None,
        checksum: str | None = None,
    ) -> list[ImportJob]:
        clauses, params = [], []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if checksum is not None:
            clauses.append("checksum = ?")
            params.append(checksum)
        return self._select(con, ("WHERE " + " AND ".join(clauses)) if clauses else "", params)

    def update(
        self,
        con: duckdb.DuckDBPyConnection,
        job_id: int,
        *,
        event: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        **changes: Any,
    ) -> ImportJob:
        """Change a job's columns and record the change in the history, in one transaction."""
        if "canonical_files" in changes:
            changes["canonical_files"] = json.dumps(changes["canonical_files"])
        changes["updated_at"] = utc_now()
        assignments = ", ".join(f"{name} = ?" for name in changes)
        con.execute("BEGIN")
        try:
            con.execute(
                f"UPDATE import_jobs SET {assignments} WHERE id = ?", [*changes.values(), job_id]
            )
            self.record(con, job_id, event, changes.get("status"), reason=reason, details=details)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return self.get(con, job_id)

    @staticmethod
    def record(
        con: duckdb.DuckDBPyConnection,
        job_id: int,
        event: str,
        status: str | None,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        con.execute(
            "INSERT INTO import_job_history VALUES (?, ?, ?, ?, ?, ?)",
            [
                job_id,
                utc_now(),
                event,
                status,
                reason,
                json.dumps(details or {}, sort_keys=True, default=str),
            ],
        )

    def history(self, job_id: int | None = None) -> list[dict[str, Any]]:
        with self.connect() as con:
            sql = (
                "SELECT job_id, recorded_at, event, status, reason, details FROM import_job_history"
            )
            rows = con.execute(
                sql
                + (" WHERE job_id = ?" if job_id is not None else "")
                + " ORDER BY recorded_at, job_id",
                [job_id] if job_id is not None else [],
            ).fetchall()
        return [
            {
                "job_id": r[0],
                "at": r[1].isoformat() + "Z",
                "event": r[2],
                "status": r[3],
                "reason": r[4],
                "details": json.loads(r[5] or "{}"),
            }
            for r in rows
        ]

    def jobs(self, *, status: str | None = None) -> list[ImportJob]:
        with self.connect() as con:
            return self.find(con, status=status)

    def job(self, job_id: int) -> ImportJob:
        with self.connect() as con:
            return self.get(con, job_id)
