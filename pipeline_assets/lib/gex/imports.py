"""The GEX import flow of `spec/gex-data-governance.md`: enqueue, stage, import, correct, retain.

1. `enqueue` records a pending job in `gex_history.db`, then `download_to_staging` streams the
   URL into `source/gexbot/<date>_<ticker>_classic_<endpoint>.json` (read-only, with its download
   sidecar) and the job gets the file's SHA256. Content already completed or queued under another
   job is not imported twice: the job is marked skipped (`skipped: true`). A pending job whose
   enqueue stopped before its file was staged is failed by `fail_abandoned_jobs` once it is older
   than any download can take.
2. `import_job` (`safe_import`) parses and validates the staged file into the staging tables
   `staging_strikes_<job_id>` and `staging_snapshots_<job_id>` of `gex_data.db` (with DuckDB's
   JSON reader and SQL rules, `sql_records.py`; the Python parser, `records.py`, names what
   breaks a rule), runs the integrity checks, inserts into `strikes` and `snapshots`
   (`data_db.py`) while the canonical Parquet (one immutable file per job and month) is written
   under temporary names, publishes the files with their sidecars and marks the job completed
   with `records_processed`. Any failure marks the job failed with a readable `last_error`,
   keeps the staged file and touches no canonical file.
3. `correct` files a follow-up job referencing the original; when it completes, the original's
   canonical files are moved to `archive/gex/superseded/` and the rewrite is recorded in the job
   history with the reason and every checksum.
4. `retention` removes staged files older than the retention period whose jobs are all done,
   archiving them first when asked; `backup_databases` snapshots both databases (before mass
   imports) and keeps the newest few snapshots.

No Dagster here: the asset, the sensor, the CLI and the HTTP server call these methods.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from upath import UPath

from pipeline_assets.lib.custody import (
    SIDECAR_SUFFIX,
    CustodyError,
    MetadataFactory,
    read_sidecar,
    write_sidecar,
)
from pipeline_assets.lib.download import (
    DEFAULT_BACKOFF_CAP,
    DownloadError,
    DownloadResult,
    download,
    redact_url,
)
from pipeline_assets.lib.files import (
    TEMP_SUFFIX,
    HashingWriter,
    remove_stale_temps,
    sha256_file,
    temp_path_for,
)
from pipeline_assets.lib.gex.data_db import delete_job_rows, store_job_rows
from pipeline_assets.lib.gex.records import (
    GexRecordError,
    ParsedFile,
    check_looks_like_json,
    decode_bytes,
    parse_records,
)
from pipeline_assets.lib.gex.sql_records import (
    StagingTables,
    contract_rows,
    read_staging,
    sql_path_refusal,
    stage_parsed,
    stage_with_sql,
)
from pipeline_assets.lib.gex.store import (
    COMPLETED,
    FAILED,
    PENDING,
    SKIPPED,
    SUPERSEDED,
    GexInputError,
    GexPaths,
    ImportJob,
    JobStore,
    validate_name,
)
from pipeline_assets.lib.parquet_lake import DEFAULT_ROW_GROUP_SIZE, WriteResult
from pipeline_assets.lib.settings import Settings
from pipeline_assets.lib.versions import CODE_VERSION

TRANSFORMATION = "gex_safe_import"
BACKUP_DIR = "backups/gex"
# The in-memory database, attached to the import's connection to gex_data.db, that holds the
# staging tables while a job is imported.
STAGING_CATALOG = "gex_staging"
DEFAULT_RETENTION_DAYS = 14
DEFAULT_MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
DEFAULT_BACKUPS_KEPT = 5
# Snapshot folders are named by their UTC time (`backup_databases`); only these are ever pruned.
_BACKUP_NAME = re.compile(r"^\d{8}T\d{12}Z$")
_TIMESTAMP = re.compile(rb'"timestamp"\s*:\s*(\d{9,10})')


@dataclass(frozen=True)
class GexConfig:
    """The knobs of the import, from `Settings` (see docs/gex.md)."""

    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    download_timeout: float = 30.0
    download_attempts: int = 4
    backoff_base: float = 0.5
    retention_days: int = DEFAULT_RETENTION_DAYS
    archive: bool = False
    lock_timeout: float = 600.0
    backups_kept: int = DEFAULT_BACKUPS_KEPT

    @property
    def download_deadline(self) -> float:
        """The longest one download attempt may take (`download_timeout` bounds each read)."""
        return max(self.download_timeout * 10, 60.0)

    @property
    def staging_limit_s(self) -> float:
        """The longest an enqueue can be downloading: every attempt to its deadline, with backoff.

        A pending job without a staged file older than this was left by an enqueue that stopped
        (killed, crashed) before its download finished: nothing will ever stage its file.
        """
        return self.download_attempts * (self.download_deadline + DEFAULT_BACKOFF_CAP)

    @classmethod
    def from_settings(cls, settings: Settings) -> GexConfig:
        return cls(
            max_download_bytes=settings.gex_max_download_bytes,
            download_timeout=settings.gex_download_timeout_s,
            retention_days=settings.gex_retention_days,
            archive=settings.gex_archive,
            backups_kept=settings.gex_backups_kept,
        )


@dataclass
class BackupResult:
    """A snapshot of the GEX databases, and the older snapshots removed to keep the newest N."""

    copies: list[str] = field(default_factory=list)  # relative to the data root
    removed: list[str] = field(default_factory=list)


@dataclass
class RetentionReport:
    removed: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # old file -> why it was kept


@dataclass
class _JsonSource:
    """A staged file's decompressed JSON; `parsed` when the Python parser has read it already."""

    plain: bytes
    path: Path  # a file holding `plain` (the staged file itself unless it was compressed)
    parsed: ParsedFile | None = None


# Dictionary encoding for the columns that repeat along a snapshot's strikes; the strikes'
# own values are nearly all distinct, and trying a dictionary on them cost a third of the write.
_NO_DICTIONARY = frozenset({"strike", "gex_vol", "gex_oi", "priors"})


@dataclass
class _CanonicalDraft:
    """A canonical file written under a temporary name, waiting to be published."""

    month: str
    path: Path
    temp: Path
    result: WriteResult


def write_canonical_parquet_draft(path: Path, table: pa.Table) -> tuple[Path, WriteResult]:
    """Write the canonical file for `path` in one pass, under a hidden temporary name beside it.

    Deterministic: the same rows give the same bytes (fixed writer settings, one row group per
    million rows); the SHA256 is computed while the bytes are written, and the file is synced.
    `publish_draft` renames it; until then no reader sees it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    temp = temp_path_for(path)
    dictionary = [n for n in table.column_names if n not in _NO_DICTIONARY]
    try:
        with open(temp, "wb", buffering=1 << 20) as raw:
            out = HashingWriter(raw)
            with pq.ParquetWriter(
                out, table.schema, compression="zstd", compression_level=3, version="2.6",
                use_dictionary=dictionary, write_statistics=True, store_schema=True,
            ) as writer:  # fmt: skip
                writer.write_table(table, row_group_size=DEFAULT_ROW_GROUP_SIZE)
            raw.flush()
            os.fsync(raw.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    groups = -(-table.num_rows // DEFAULT_ROW_GROUP_SIZE)
    result = WriteResult(
        UPath(path), out.hexdigest, out.bytes_written, table.num_rows, groups, table.schema
    )
    return temp, result


def publish_draft(temp: Path, path: Path) -> None:
    """Rename a draft to its canonical name (atomic) and make the rename durable."""
    os.replace(temp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def split_by_month(strikes: pa.Table, snapshots: pa.Table) -> list[tuple[str, pa.Table]]:
    """The strike rows of each month (`YYYY-MM`) of their snapshots' times, months in order."""
    times = snapshots["snapshot_ts_utc"]
    bounds = pc.min_max(times).as_py()
    first, last = bounds["min"], bounds["max"]
    if (first.year, first.month) == (last.year, last.month):
        # A day's history, the usual file: one month, no filtering (formatting each row's time
        # as text cost more than the rest of the import on a 50 MB file).
        return [(f"{first:%Y-%m}", strikes)]
    # The month of each snapshot, then of each strike row through its snapshot.
    months = pc.add(pc.multiply(pc.year(times), 100), pc.month(times))
    keys = pc.take(
        months, pc.index_in(strikes["record_index"], value_set=snapshots["record_index"])
    )
    return [
        (f"{key // 100:04d}-{key % 100:02d}", strikes.filter(pc.equal(keys, key)))
        for key in sorted(pc.unique(months).to_pylist())
    ]


class GexImporter:
    def __init__(
        self,
        data_root: str | os.PathLike[str],
        config: GexConfig | None = None,
        *,
        log: Callable[[str], None] | None = None,
        run_id: str | None = None,
    ):
        self.paths = GexPaths(Path(data_root).resolve())
        self.config = config or GexConfig()
        self.store = JobStore(self.paths, lock_timeout=self.config.lock_timeout)
        self.log = log or (lambda message: None)
        self.run_id = run_id
        self.custody = MetadataFactory(self.paths.data_root, code_version=CODE_VERSION)

    # --- enqueue and staging -----------------------------------------------------------------

    def enqueue(
        self,
        url: str,
        ticker: str,
        endpoint: str,
        *,
        corrects_job_id: int | None = None,
        reason: str | None = None,
    ) -> ImportJob:
        """Record a job, stage its file, and mark it skipped when its content is already known."""
        validate_name("ticker", ticker)
        validate_name("endpoint", endpoint)
        if not isinstance(url, str) or not url.strip():
            raise GexInputError("url is empty; expected an http(s):// or file:// URL")
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme not in ("http", "https", "file"):
            raise GexInputError(
                f"url {redact_url(url)!r} is refused: expected an http(s):// or file:// URL"
            )
        with self.store.connect() as con:
            if corrects_job_id is not None:
                self.store.get(con, corrects_job_id)  # must exist
            job = self.store.create(
                con, url=redact_url(url), ticker=ticker, endpoint=endpoint,
                corrects_job_id=corrects_job_id, reason=reason,
            )  # fmt: skip
        try:
            staged = self.download_to_staging(url, ticker, endpoint, job_id=job.id)
        except (DownloadError, GexRecordError) as exc:
            with self.store.connect() as con:
                job = self.store.update(
                    con, job.id, event="staging_failed", status=FAILED, last_error=str(exc)
                )
            self.log(f"job {job.id}: staging failed: {exc}")
            return job
        relative = self.custody.relative(staged.path)
        try:  # the light check of the spec: does it look like JSON at all?
            with open(staged.path, "rb") as handle:
                check_looks_like_json(handle.read(4096), name=relative)
        except GexRecordError as exc:
            with self.store.connect() as con:
                job = self.store.update(
                    con, job.id, event="staging_failed", status=FAILED, last_error=str(exc),
                    checksum=staged.sha256, staged_path=relative,
                )  # fmt: skip
            self.log(f"job {job.id}: staged file is not JSON: {exc}")
            return job
        with self.store.connect() as con:
            if self.store.get(con, job.id).status != PENDING:
                # Failed as abandoned (`fail_abandoned_jobs`) while this download ran: the
                # verdict stands; the file is recorded, and enqueueing the URL again imports it.
                job = self.store.update(
                    con, job.id, event="staged", checksum=staged.sha256, staged_path=relative,
                    details={"sha256": staged.sha256, "late": True},
                )  # fmt: skip
                self.log(f"job {job.id}: staged {relative} after the job was failed as abandoned")
                return job
            dup = next(
                (
                    j
                    for j in self.store.find(con, checksum=staged.sha256)
                    if j.id != job.id and j.status in (COMPLETED, PENDING)
                ),
                None,
            )
            if dup is not None:
                job = self.store.update(
                    con, job.id, event="skipped", status=SKIPPED, skipped=True, duplicate_of=dup.id,
                    checksum=staged.sha256, staged_path=relative,
                    details={"reason": f"same SHA256 as job {dup.id} ({dup.status})", "sha256": staged.sha256},
                )  # fmt: skip
                self.log(
                    f"job {job.id}: skipped, same content as job {dup.id} ({staged.sha256[:12]})"
                )
                return job
            job = self.store.update(
                con, job.id, event="staged", checksum=staged.sha256, staged_path=relative,
                details={"sha256": staged.sha256, "bytes": staged.size_bytes, "attempts": staged.attempts,
                         "already_downloaded": staged.reused, "etag": staged.etag},
            )  # fmt: skip
        self.log(f"job {job.id}: staged {relative} ({staged.size_bytes:,} bytes)")
        return job

    def download_to_staging(
        self, url: str, ticker: str, endpoint: str, *, job_id: int | None = None
    ) -> DownloadResult:
        """Stream `url` into `source/gexbot/` under the spec's name, read-only, with its sidecar."""
        folder = self.paths.staging_dir

        def name(temp: Path) -> str:
            with open(temp, "rb") as handle:
                head = handle.read(65536)
            match = _TIMESTAMP.search(head)
            day = (
                dt.datetime.fromtimestamp(int(match.group(1)), dt.UTC).date()
                if match
                else dt.datetime.now(dt.UTC).date()
            )
            suffix = (
                ".json.gz"
                if head[:2] == b"\x1f\x8b"
                else ".json.bz2"
                if head[:3] == b"BZh"
                else ".json"
            )
            base = f"{day.isoformat()}_{ticker}_classic_{endpoint}"
            if (folder / f"{base}{suffix}").exists() and job_id is not None:
                base += f"_job{job_id}"
            return base + suffix

        return download(
            url,
            folder,
            root=self.paths.data_root,
            filename=name,
            max_bytes=self.config.max_download_bytes,
            timeout=self.config.download_timeout,
            deadline=self.config.download_deadline,
            attempts=self.config.download_attempts,
            backoff_base=self.config.backoff_base,
            read_only=True,
            run_id=self.run_id,
            log=self.log,
        )

    def correct(self, job_id: int, url: str, reason: str) -> ImportJob:
        """File a correction of job `job_id`: a new job that references it, with the reason."""
        if not reason or not reason.strip():
            raise GexInputError("a correction needs a --reason")
        original = self.store.job(job_id)
        job = self.enqueue(
            url, original.ticker, original.endpoint, corrects_job_id=job_id, reason=reason
        )
        with self.store.connect() as con:
            self.store.record(
                con,
                job_id,
                "correction_filed",
                None,
                reason=reason,
                details={"correction_job_id": job.id},
            )
        return job

    # --- import ------------------------------------------------------------------------------

    def pending_jobs(self) -> list[ImportJob]:
        """Pending jobs whose file is staged (a job without one is still being downloaded)."""
        return [j for j in self.store.jobs(status=PENDING) if j.checksum]

    def fail_abandoned_jobs(self, now: dt.datetime | None = None) -> list[ImportJob]:
        """Fail the pending jobs whose enqueue stopped before their file was staged.

        Such a job (pending, no staged file, created longer ago than any download can take,
        `GexConfig.staging_limit_s`) was left by an enqueue that was killed or crashed while it
        downloaded: nothing will ever stage its file. It becomes `failed` with a `last_error` that
        says so (event `abandoned`); enqueueing the URL again is a new job. The partial downloads
        such enqueues left in the staging folder (hidden temporaries whose writer is gone) are
        removed. The sensor and `pipeline gex import` run this first.
        """
        now = now or dt.datetime.now(dt.UTC)
        limit = self.config.staging_limit_s
        cutoff = now.replace(tzinfo=None) - dt.timedelta(seconds=limit)
        failed = []
        with self.store.connect() as con:
            for job in self.store.find(con, status=PENDING):
                if job.checksum or job.staged_path or job.created_at is None:
                    continue
                if job.created_at >= cutoff:
                    continue  # its enqueue may still be downloading
                age = (now.replace(tzinfo=None) - job.created_at).total_seconds()
                message = (
                    f"abandoned: the file of {job.url} was never staged; the job has been pending "
                    f"for {age:,.0f}s, longer than a download can take ({limit:,.0f}s: "
                    f"{self.config.download_attempts} attempts of up to "
                    f"{self.config.download_deadline:,.0f}s), so its enqueue stopped (killed or "
                    "crashed) before the download finished. Enqueue the URL again."
                )
                job = self.store.update(
                    con, job.id, event="abandoned", status=FAILED, last_error=message,
                    details={"pending_s": round(age), "limit_s": limit},
                )  # fmt: skip
                failed.append(job)
                self.log(f"job {job.id}: failed: {message}")
            if failed:
                for temp in self._remove_dead_download_temps():
                    self.log(f"removed the partial download {temp} of a stopped enqueue")
        return failed

    def _remove_dead_download_temps(self) -> list[str]:
        """Remove hidden download temporaries in the staging folder whose writer is gone."""
        folder = self.paths.staging_dir
        if not folder.is_dir():
            return []
        before = {p.name for p in folder.iterdir() if p.name.startswith(".")}
        # `.<target name>.<pid>-<uuid>.tmp` (`files.temp_path_for`)
        stems = [n[1 : -len(TEMP_SUFFIX)] for n in before if n.endswith(TEMP_SUFFIX)]
        targets = {stem.rsplit(".", 1)[0] for stem in stems if "." in stem}
        for target in sorted(targets):
            remove_stale_temps(folder / target)
        after = {p.name for p in folder.iterdir() if p.name.startswith(".")}
        return sorted(self.custody.relative(folder / n) for n in before - after)

    def import_pending(self) -> list[ImportJob]:
        """Fail abandoned jobs, then import every pending job, oldest first (what `pipeline gex
        import` runs). Returns the jobs it changed: the abandoned ones, then the imported ones."""
        abandoned = self.fail_abandoned_jobs()
        return abandoned + [self.import_job(job.id) for job in self.pending_jobs()]

    def import_job(self, job_id: int) -> ImportJob:
        """`safe_import` of one job; a job that is not pending is returned unchanged."""
        with self.store.connect() as con:
            job = self.store.get(con, job_id)
            if job.status != PENDING or not job.checksum:
                # Done already, or still being downloaded by its enqueue (not staged yet).
                return job
            dup = next(
                (
                    j
                    for j in self.store.find(con, status=COMPLETED, checksum=job.checksum)
                    if j.id != job.id
                ),
                None,
            )
            if dup is not None:
                self.log(f"job {job.id}: skipped, same content as completed job {dup.id}")
                return self.store.update(
                    con, job.id, event="skipped", status=SKIPPED, skipped=True, duplicate_of=dup.id,
                    details={"reason": f"same SHA256 as completed job {dup.id}", "sha256": job.checksum},
                )  # fmt: skip
        staged = self.paths.data_root / job.staged_path
        try:
            data = staged.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            if sha != job.checksum:
                raise GexRecordError(
                    f"{job.staged_path}: SHA256 is {sha}, but the job recorded {job.checksum} "
                    "(the staged file changed after it was downloaded)"
                )
            source = self._json_source(job, data)
        except (GexRecordError, OSError, pa.ArrowException) as exc:
            return self._fail(job, str(exc))
        with contextlib.ExitStack() as cleanup:
            if source.parsed is None and source.plain is not data:
                # DuckDB reads the decompressed bytes from a private temporary file.
                folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="gex-")))
                source.path = folder / "staged.json"
                source.path.write_bytes(source.plain)
            del data
            with self.paths.lock(self.config.lock_timeout):
                drafts: list[_CanonicalDraft] = []
                try:
                    records, rows = self._load_duckdb(job, source, drafts)
                    files = self._publish_canonical(job, drafts, staged)
                except (GexRecordError, duckdb.Error, OSError, pa.ArrowException) as exc:
                    for draft in drafts:
                        draft.temp.unlink(missing_ok=True)
                    self._unload_duckdb(job.id)
                    reason = (
                        exc if isinstance(exc, GexRecordError) else f"{type(exc).__name__}: {exc}"
                    )
                    return self._fail(job, str(reason), locked=True)
                with self.store.connect(locked=False) as con:
                    job = self.store.update(
                        con, job.id, event="completed", status=COMPLETED,
                        records_processed=records, rows_written=rows,
                        canonical_files=[f["path"] for f in files], last_error=None,
                        details={"files": files, "staged_sha256": job.checksum},
                    )  # fmt: skip
                    if job.corrects_job_id is not None:
                        self._supersede(con, job, files)
        self.log(f"job {job.id}: imported {records:,} records, {rows:,} rows")
        return job

    def _json_source(self, job: ImportJob, data: bytes) -> _JsonSource:
        """The staged file's JSON, and which parser reads it (outside the lock).

        The SQL path (DuckDB, `sql_records.py`) takes every file whose fields the contract names;
        the others are parsed here by the Python parser, which keeps unnamed fields in
        `extra_fields`.
        """
        name = job.staged_path or str(job.id)
        plain = decode_bytes(data, name=name, max_bytes=self.config.max_download_bytes)
        check_looks_like_json(plain[:4096], name=name)
        source = _JsonSource(plain=plain, path=self.paths.data_root / name)
        refusal = sql_path_refusal(plain)
        if refusal is not None:
            self.log(f"job {job.id}: the staged file {refusal}: parsed in Python")
            source.parsed = self._parse_in_python(job, plain)
        return source

    def _parse_in_python(self, job: ImportJob, plain: bytes) -> ParsedFile:
        try:
            return parse_records(
                plain, job_id=job.id, endpoint=job.endpoint, name=job.staged_path or str(job.id),
                max_bytes=self.config.max_download_bytes,
            )  # fmt: skip
        except pa.ArrowException as exc:  # a value pyarrow cannot hold: say so, as a record error
            raise GexRecordError(f"{job.staged_path}: {exc}") from None

    def _fail(self, job: ImportJob, message: str, *, locked: bool = False) -> ImportJob:
        self.log(f"job {job.id}: failed: {message}")
        with self.store.connect(locked=not locked) as con:
            return self.store.update(con, job.id, event="failed", status=FAILED, last_error=message)

    def _load_duckdb(
        self, job: ImportJob, source: _JsonSource, drafts: list[_CanonicalDraft]
    ) -> tuple[int, int]:
        """Staging tables, integrity checks, then `strikes` and `snapshots` (idempotent per job).

        Returns the number of records and of rows. The staging tables (`staging_strikes_<id>`,
        `staging_snapshots_<id>`) live in an in-memory database attached to the import's
        connection to gex_data.db (`gex_staging`): they last while the import runs and need no
        cleaning up after a crash. While DuckDB inserts them into `strikes` and `snapshots`, a
        second thread reads them on its own cursor and writes the canonical Parquet to temporary
        files (`drafts`), which `_publish_canonical` renames once both succeeded: the two do not
        wait for each other, and a failure publishes nothing.
        """
        tables = StagingTables.for_job(job.id, STAGING_CATALOG)
        con = duckdb.connect(str(self.paths.data_db))
        try:
            con.execute(f"ATTACH ':memory:' AS {STAGING_CATALOG}")
            parsed = source.parsed
            records = None
            if parsed is None:
                records = stage_with_sql(
                    con, source.path, tables=tables, job_id=job.id, endpoint=job.endpoint,
                    single_object=source.plain[:4096].lstrip(b" \t\r\n")[:1] == b"{",
                )  # fmt: skip
                if records is None:
                    # A rule is broken somewhere (or DuckDB refused the file): the Python parser
                    # names the record and the field.
                    parsed = self._parse_in_python(job, source.plain)
            if parsed is not None:
                stage_parsed(con, parsed.table, tables=tables)
                records = parsed.records
            (snapshots, null_ts), (rows,) = (
                con.execute(
                    "SELECT count(*), count(*) FILTER (WHERE timestamp IS NULL OR snapshot_ts_utc "
                    f"IS NULL) FROM {tables.snapshots}"
                ).fetchone(),
                con.execute(f"SELECT count(*) FROM {tables.strikes}").fetchone(),
            )
            if snapshots == 0 or rows == 0:
                raise GexRecordError(f"{job.staged_path}: integrity check: no records")
            if null_ts:
                raise GexRecordError(
                    f"{job.staged_path}: integrity check: {null_ts} records without a timestamp"
                )
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gex-parquet") as pool:
                # A cursor is a connection of the same database instance: it sees the attached
                # in-memory catalog, and reads it while `con` inserts.
                writing = pool.submit(self._draft_canonical, job, con.cursor(), tables, drafts)
                try:
                    store_job_rows(con, job.id, tables)
                finally:
                    writing.result()  # waits; raises what the writer raised
            tables.drop(con)
        finally:
            con.close()
        return int(records), int(rows)

    def _unload_duckdb(self, job_id: int) -> None:
        if not self.paths.data_db.exists():
            return
        con = duckdb.connect(str(self.paths.data_db))
        try:
            delete_job_rows(con, job_id)
        finally:
            con.close()

    def canonical_path(self, job: ImportJob, month: str) -> Path:
        year, mm = month.split("-")
        return (
            self.paths.parquet_root
            / year
            / mm
            / job.ticker
            / job.endpoint
            / f"strikes_job{job.id}.parquet"
        )

    def _draft_canonical(
        self,
        job: ImportJob,
        cursor: duckdb.DuckDBPyConnection,
        tables: StagingTables,
        drafts: list[_CanonicalDraft],
    ) -> None:
        """Write one Parquet file per month of the job's snapshots, under temporary names.

        Runs beside the insert into `strikes`, so it reads the staging tables on a cursor of its
        own, which it closes.
        """
        try:
            strikes, snapshots = read_staging(cursor, tables)
        finally:
            cursor.close()

        def draft(month: str, part: pa.Table) -> _CanonicalDraft:
            path = self.canonical_path(job, month)
            temp, result = write_canonical_parquet_draft(path, contract_rows(part, snapshots))
            return _CanonicalDraft(month=month, path=path, temp=temp, result=result)

        months = split_by_month(strikes, snapshots)
        # A history across a month end: its files are independent, and the Parquet writer
        # encodes on one core, so two are written at once.
        with ThreadPoolExecutor(max_workers=min(2, len(months))) as pool:
            futures = [pool.submit(draft, month, part) for month, part in months]
        # In month order; every written draft is kept, so that a failure removes them all.
        drafts.extend(f.result() for f in futures if f.exception() is None)
        failure = next((f.exception() for f in futures if f.exception() is not None), None)
        if failure is not None:
            raise failure

    def _publish_canonical(
        self, job: ImportJob, drafts: list[_CanonicalDraft], staged: Path
    ) -> list[dict[str, Any]]:
        """Rename the drafts to their canonical names, each with its sidecar."""
        parent = self.custody.file_parent(UPath(staged), sha256=job.checksum)
        written = []
        for draft in drafts:
            path, result, month = draft.path, draft.result, draft.month
            old = sha256_file(path)[0] if path.exists() else None
            publish_draft(draft.temp, path)
            record = self.custody.processed(
                UPath(path), sha256=result.sha256, size_bytes=result.size_bytes, parents=[parent],
                transformation_name=TRANSFORMATION,
                transformation_params={"job_id": job.id, "ticker": job.ticker, "endpoint": job.endpoint, "month": month},
                rows=result.rows, asset_key="gex_strikes", partition_key=job.partition_key, run_id=self.run_id,
            )  # fmt: skip
            write_sidecar(UPath(path), record)
            relative = self.custody.relative(path)
            if old is not None and old != result.sha256:
                # Only a job that never completed can find its own file: an interrupted attempt.
                with self.store.connect(locked=False) as con:
                    self.store.record(
                        con, job.id, "rewrite", None, reason="an earlier attempt of this job was interrupted",
                        details={"path": relative, "old_sha256": old, "new_sha256": result.sha256},
                    )  # fmt: skip
            written.append(
                {"path": relative, "sha256": result.sha256, "rows": result.rows, "month": month}
            )
        return written

    def _supersede(
        self, con: duckdb.DuckDBPyConnection, job: ImportJob, files: list[dict[str, Any]]
    ) -> None:
        """A completed correction retires the original's canonical files; the rewrite is recorded."""
        original = self.store.get(con, job.corrects_job_id)
        old_files = []
        for rel in original.canonical_files:
            src = self.paths.data_root / rel
            if not src.exists():
                continue
            sha = read_sidecar(UPath(src)).file_sha256
            dest = self.paths.archive_dir / "superseded" / Path(rel).relative_to("parquet/gex")
            dest.parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("", SIDECAR_SUFFIX):
                os.replace(str(src) + suffix, str(dest) + suffix)
            old_files.append(
                {"path": rel, "sha256": sha, "archived_to": self.custody.relative(dest)}
            )
        self._unload_duckdb(original.id)
        details = {
            "original_job_id": original.id, "correction_job_id": job.id,
            "old_staged_sha256": original.checksum, "new_staged_sha256": job.checksum,
            "old_files": old_files, "new_files": files,
        }  # fmt: skip
        if original.status == COMPLETED:
            self.store.update(
                con,
                original.id,
                event="rewrite",
                status=SUPERSEDED,
                reason=job.reason,
                details=details,
            )
        else:
            self.store.record(
                con, original.id, "rewrite", original.status, reason=job.reason, details=details
            )
        self.store.record(con, job.id, "rewrite", COMPLETED, reason=job.reason, details=details)
        self.log(
            f"job {job.id} corrects job {original.id} ({job.reason}): {len(old_files)} file(s) superseded"
        )

    # --- backups -----------------------------------------------------------------------------

    def backup_databases(self, now: dt.datetime | None = None) -> BackupResult:
        """Snapshot `gex_history.db` and `gex_data.db` into `backups/gex/<UTC time>/`.

        The spec asks for a snapshot of both before mass imports. Taken under the writer lock,
        so no import or enqueue writes during the copy (connections live only inside the lock, so
        the files are checkpointed); each copy is verified by SHA256. Then only the newest
        `backups_kept` snapshots are kept (`prune_backups`). Paths are relative to the data root.
        """
        stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%S%fZ")
        folder = self.paths.data_root / BACKUP_DIR / stamp
        result = BackupResult()
        with self.paths.lock(self.config.lock_timeout):
            for db in (self.paths.history_db, self.paths.data_db):
                for path in (db, db.with_name(db.name + ".wal")):
                    if not path.exists():
                        continue
                    folder.mkdir(parents=True, exist_ok=True)
                    copy = folder / path.name
                    shutil.copy2(path, copy)
                    if sha256_file(copy) != sha256_file(path):
                        raise OSError(f"backing up {path} to {copy}: the copy differs")
                    result.copies.append(self.custody.relative(copy))
            self.log(f"backup: {', '.join(result.copies) or 'no GEX database yet'}")
            result.removed = self.prune_backups(locked=True)
        return result

    def prune_backups(self, *, locked: bool = False) -> list[str]:
        """Remove all but the newest `backups_kept` snapshots under `backups/gex/`; log each.

        Only folders named like a snapshot (`YYYYMMDDTHHMMSSffffffZ`, which sort by time) are
        counted and removed; anything else there is left alone.
        """
        root = self.paths.data_root / BACKUP_DIR
        guard = contextlib.nullcontext() if locked else self.paths.lock(self.config.lock_timeout)
        removed = []
        with guard:
            if not root.is_dir():
                return []
            snapshots = sorted(
                p for p in root.iterdir() if p.is_dir() and _BACKUP_NAME.match(p.name)
            )
            for old in snapshots[: max(0, len(snapshots) - self.config.backups_kept)]:
                shutil.rmtree(old)
                removed.append(self.custody.relative(old))
                self.log(
                    f"backup: removed {removed[-1]} (keeping the newest {self.config.backups_kept})"
                )
        return removed

    # --- retention ---------------------------------------------------------------------------

    def retention(self, now: dt.datetime | None = None) -> RetentionReport:
        """Remove staged files older than `retention_days` whose jobs are all done."""
        now = now or dt.datetime.now(dt.UTC)
        cutoff = now - dt.timedelta(days=self.config.retention_days)
        report = RetentionReport()
        folder = self.paths.staging_dir
        if not folder.is_dir():
            return report
        with self.paths.lock(self.config.lock_timeout), self.store.connect(locked=False) as con:
            jobs = self.store.find(con)
            by_file: dict[str, list[ImportJob]] = {}
            for job in jobs:
                if job.staged_path:
                    by_file.setdefault(job.staged_path, []).append(job)
            for path in sorted(folder.iterdir()):
                if (
                    path.name.startswith(".")
                    or path.name.endswith(SIDECAR_SUFFIX)
                    or not path.is_file()
                ):
                    continue
                if _staged_at(path) >= cutoff:
                    continue
                rel = self.custody.relative(path)
                refs = by_file.get(rel, [])
                open_jobs = [j for j in refs if j.status not in (COMPLETED, SKIPPED, SUPERSEDED)]
                if not refs:
                    report.kept[rel] = "no import job refers to it"
                elif open_jobs:
                    report.kept[rel] = ", ".join(f"job {j.id} is {j.status}" for j in open_jobs)
                if rel in report.kept:
                    self.log(f"retention: kept {rel}: {report.kept[rel]}")
                    continue
                sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
                archived = None
                if self.config.archive:
                    dest = self.paths.archive_dir / "staged" / path.name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, dest)
                    if sidecar.exists():
                        shutil.copy2(sidecar, dest.with_name(dest.name + SIDECAR_SUFFIX))
                    if sha256_file(dest)[0] != sha256_file(path)[0]:
                        raise OSError(
                            f"archiving {path} to {dest}: the copy differs; nothing removed"
                        )
                    archived = self.custody.relative(dest)
                    report.archived.append(archived)
                path.unlink()
                sidecar.unlink(missing_ok=True)
                report.removed.append(rel)
                for job in refs:
                    self.store.record(
                        con, job.id, "staged_file_removed", job.status,
                        reason=f"retention: older than {self.config.retention_days} days",
                        details={"path": rel, "archived_to": archived},
                    )  # fmt: skip
                self.log(
                    f"retention: removed {rel}" + (f" (archived to {archived})" if archived else "")
                )
        return report


def _staged_at(path: Path) -> dt.datetime:
    """When a staged file was downloaded: its sidecar's time, else its modification time."""
    with contextlib.suppress(CustodyError):
        stamp = getattr(read_sidecar(UPath(path)), "download_timestamp", None)
        if stamp is not None:
            return stamp
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
