"""The write paths the crash campaign kills: the staging export, the bronze/silver/gold lake
writes, a GEX import and an HQ export. Each pairs the work (run in a killed child process) with
an independent inspection: plain `sqlite3`, DuckDB and pyarrow read the files back, and the
expected rows come from the sources, not from the code under test."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from pipeline_assets_tests.faults.campaign import Inspection

# ---------------------------------------------------------------------------------------------
# Shared inspection helpers
# ---------------------------------------------------------------------------------------------

SIDECAR = ".meta.json"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sidecar_mismatch(path: Path) -> str | None:
    """Why `path` is not the complete file its sidecar describes (None: it is, or has none)."""
    sidecar = Path(str(path) + SIDECAR)
    if not sidecar.exists():
        return None
    from pipeline_assets.lib.custody import read_sidecar
    from pipeline_assets.lib.files import as_upath

    try:
        recorded = read_sidecar(as_upath(path)).file_sha256
    except Exception as exc:  # noqa: BLE001 - an unreadable sidecar is the finding
        return f"{sidecar.name}: unreadable sidecar ({exc})"
    actual = sha256_of(path)
    if actual != recorded:
        return f"{path.name}: SHA256 {actual[:12]} but its sidecar records {recorded[:12]}"
    return None


def parquet_problem(path: Path) -> str | None:
    """Why `path` is not a complete Parquet file matching its sidecar (None: it is)."""
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(path).metadata  # noqa: B018 - the footer read is the check
    except Exception as exc:  # noqa: BLE001 - any failure to open is the finding
        return f"{path}: not a complete Parquet file ({exc})"
    problem = sidecar_mismatch(path)
    if problem is None and not Path(str(path) + SIDECAR).exists():
        return f"{path}: no sidecar"
    return problem


def canonical_parquet(folder: Path) -> list[Path]:
    """Parquet files at canonical names (temporaries are hidden `.name.*.tmp` files)."""
    if not folder.exists():
        return []
    return sorted(
        p for p in folder.rglob("*.parquet") if not any(s.startswith(".") for s in p.parts)
    )


def tree_hashes(root: Path, folders: list[str], suffixes: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for name in folders:
        base = root / name
        if not base.exists():
            continue
        for p in sorted(base.rglob("*")):
            if p.is_file() and p.name.endswith(suffixes) and not p.name.startswith("."):
                out[str(p.relative_to(root))] = sha256_of(p)
    return out


# ---------------------------------------------------------------------------------------------
# Staging export
# ---------------------------------------------------------------------------------------------

STAGING_DAY = dt.date(2026, 2, 19)
STATE_KEY = "campaign"
TICKS_PER_ATTEMPT = 400


def _staging_options(end_utc: str, fmt: str) -> Any:
    from pipeline_assets.lib.market.staging_export import export_options

    return export_options(
        hours=72,
        end_utc=end_utc,
        chunk_size=40,
        incremental=True,
        update_state=True,
        state_key=STATE_KEY,
        output_format=fmt,
    )


def staging_work(root: str, end_utc: str, fmt: str) -> None:
    from pipeline_assets.lib.market.staging_export import run_staging_export

    base = Path(root)
    run_staging_export(
        _staging_options(end_utc, fmt),
        worker_files=sorted((base / "source/workers").glob("*.db")),
        input_glob="source/workers/*.db",
        data_root=base,
        staging_dir=base / "staging",
    )


def _ts(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class StagingCrash:
    """Incremental staging exports while the collectors keep writing; every format in turn."""

    fault = "SIGKILL during the staging export"
    work = staticmethod(staging_work)
    formats = ("sqlite", "csv", "json")

    def __init__(self) -> None:
        self.clock = dt.datetime.combine(STAGING_DAY + dt.timedelta(days=1), dt.time(), dt.UTC)
        self.end_utc = ""

    def setup(self, base: Path) -> Path:
        from pipeline_assets.lib.market.demo_sources import write_demo_worker_files

        root = base / "staging_crash"
        write_demo_worker_files(root / "source/workers", [STAGING_DAY], rows_per_day=300)
        # The demo day first, so that every attempt exports the rows of one collector interval.
        staging_work(str(root), _ts(self.clock), "sqlite")
        return root

    def before_attempt(self, workdir: Path, attempt: int, rng: random.Random) -> None:
        # The collector writes on: new ticks, later ingestion times, in one worker file.
        path = sorted((workdir / "source/workers").glob("*.db"))[attempt % 2]
        rows = []
        for _ in range(TICKS_PER_ATTEMPT):
            self.clock += dt.timedelta(microseconds=rng.randint(1, 20_000))
            rows.append(_ts(self.clock))
        conn = sqlite3.connect(path, timeout=30)
        conn.executemany(
            "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc,"
            " payload) VALUES ('Binance', 'BTCUSDT', 'ticker', ?, ?,"
            ' \'{"bid": 1, "ask": 2, "last": 1.5, "volume_24h": 3}\')',
            [(ts, ts) for ts in rows],
        )
        conn.commit()
        conn.close()
        self.end_utc = _ts(self.clock)

    def work_args(self, workdir: Path, attempt: int) -> tuple[Any, ...]:
        return (str(workdir), self.end_utc, self.formats[attempt % len(self.formats)])

    def rerun(self, workdir: Path, attempt: int) -> None:
        staging_work(*self.work_args(workdir, attempt))

    def _state(self, workdir: Path) -> dict[str, Any]:
        path = workdir / "staging/staging_export_state.json"
        return json.loads(path.read_bytes())["profiles"].get(STATE_KEY, {})

    def after_kill(self, workdir: Path) -> Inspection:
        found = Inspection()
        staging = workdir / "staging"
        journal_path = staging / ".staging_export.pending.json"
        journaled = (
            set(json.loads(journal_path.read_bytes()).get("files", []))
            if journal_path.exists()
            else set()
        )
        for path in sorted(staging.iterdir()):
            if path.name.startswith(".") or path.name.endswith(SIDECAR):
                continue
            if path.name == "staging_export_state.json":
                continue
            problem = sidecar_mismatch(path)
            # Complete but not yet described: allowed only for an uncommitted (journaled) export,
            # which the next run removes.
            if (
                problem is None
                and not Path(str(path) + SIDECAR).exists()
                and path.name not in journaled
            ):
                problem = f"{path.name}: no sidecar and not in the journal"
            if problem is None and path.suffix == ".sqlite":
                conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
                ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
                conn.close()
                if ok != "ok":
                    problem = f"{path.name}: integrity_check says {ok}"
            if problem:
                found.partial_files += 1
                found.problems.append(problem)
        # The watermark in the state must be that of an export whose files are all in place.
        profile = self._state(workdir)
        metadata_name = profile.get("last_metadata_file")
        metadata_path = staging / str(metadata_name)
        if not metadata_name or not metadata_path.exists():
            found.watermarks_ahead += 1
            found.problems.append(f"state names {metadata_name}, which is not in {staging}")
        else:
            metadata = json.loads(metadata_path.read_bytes())
            new = metadata["watermarks"]["new"]["market_ticks_ingestion_ts_utc"]
            missing = [f for f in metadata["output_files"] if not (workdir / f).exists()]
            if new != profile.get("market_ticks_ingestion_ts_utc") or missing:
                found.watermarks_ahead += 1
                found.problems.append(f"state watermark {profile} vs export {new}, {missing}")
        return found

    def after_rerun(self, workdir: Path, attempt: int) -> Inspection:
        from pipeline_assets.lib.market.staging_export import read_export_rows

        found = Inspection()
        staging = workdir / "staging"
        if any(p.name.endswith(".tmp") for p in staging.iterdir()):
            found.partial_files += 1
            found.problems.append("temporary files left after the rerun")
        if (staging / ".staging_export.pending.json").exists():
            found.partial_files += 1
            found.problems.append("journal left after the rerun")
        got: list[tuple[str, int]] = []
        for metadata in sorted(staging.glob("*_metadata.json")):
            for table in ("market_ticks", "rejects"):
                for row in read_export_rows(metadata, table):
                    if table == "rejects" and row["source_table"] != "market_ticks":
                        continue
                    got.append((row["source_file"], int(row["source_id"])))
        # Independent count: every tick ingested up to the attempt's end, by plain SQL.
        expected: set[tuple[str, int]] = set()
        latest = ""
        for path in sorted((workdir / "source/workers").glob("*.db")):
            conn = sqlite3.connect(path)
            ids = conn.execute(
                "SELECT id, ingestion_ts_utc FROM market_ticks WHERE ingestion_ts_utc <= ?",
                (self.end_utc,),
            ).fetchall()
            conn.close()
            expected |= {(path.name, i) for i, _ in ids}
            latest = max([latest, *(ts for _, ts in ids if len(ts) == 27)])
        found.rows_duplicated += len(got) - len(set(got))
        found.rows_lost += len(expected - set(got))
        extra = set(got) - expected
        state = self._state(workdir).get("market_ticks_ingestion_ts_utc", "")
        if extra or state[:26] != latest[:26]:
            found.rerun_differs += 1
            found.problems.append(
                f"rerun differs: {len(extra)} rows beyond the end, state {state} vs {latest}"
            )
        if found.rows_lost or found.rows_duplicated:
            found.problems.append(
                f"{found.rows_lost} lost, {found.rows_duplicated} duplicated of {len(expected)}"
            )
        return found


# ---------------------------------------------------------------------------------------------
# Bronze, silver and gold: the lake IO manager's writes in real Dagster runs
# ---------------------------------------------------------------------------------------------

LAKE_DAYS = ("2026-02-18", "2026-02-19")
LAKE_LAYERS = ["bronze", "silver", "gold"]
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def lake_work(root: str) -> None:
    """Bronze for both days in one run, then silver and gold for both days in one run."""
    import dagster as dg

    from pipeline_assets.defs.market_data.bronze import bronze_market_data
    from pipeline_assets.defs.market_data.features_jobs import market_features_job
    from pipeline_assets.defs.market_data.gold import gold_bars_1m
    from pipeline_assets.defs.market_data.jobs import bronze_job
    from pipeline_assets.defs.market_data.silver import silver_market_features
    from pipeline_assets.resources.lake_io_manager import LakeIOManager
    from pipeline_assets_tests.market_data.feature_reference import market_resources

    # No fsync: a killed process loses nothing the kernel holds (fsync guards power loss).
    resources = {
        **market_resources(Path(root)),
        "io_manager": LakeIOManager(lake_root=root, fsync=False),
    }
    defs = dg.Definitions(
        assets=[bronze_market_data, silver_market_features, gold_bars_1m],
        jobs=[bronze_job, market_features_job],
        resources=resources,
    )
    tags = dict(zip(RANGE_TAGS, (LAKE_DAYS[0], LAKE_DAYS[-1])))
    with dg.DagsterInstance.ephemeral() as instance:
        for job in ("bronze_job", "market_features_job"):
            result = defs.resolve_job_def(job).execute_in_process(
                instance=instance, tags=tags, raise_on_error=False, run_config=QUIET
            )
            if not result.success:
                raise RuntimeError(
                    f"{job} failed: {[e.message for e in result.all_events if e.is_failure]}"
                )


def _bronze_keys(root: Path) -> list[tuple[str, int]]:
    import duckdb

    files = [
        str(p)
        for p in canonical_parquet(root / "bronze")
        if "bronze_connection_events" not in str(p)
    ]
    if not files:
        return []
    con = duckdb.connect()
    rows = con.execute(
        "SELECT source_file, source_id FROM read_parquet(?, union_by_name=true)", [files]
    ).fetchall()
    con.close()
    return [(f, int(i)) for f, i in rows]


class LakeCrash:
    """Bronze, silver and gold for two days, killed anywhere from the first read to the last
    checkpoint; even attempts write into an empty lake, odd ones rewrite a complete one."""

    fault = "SIGKILL during a bronze/silver/gold write"
    work = staticmethod(lake_work)

    def setup(self, base: Path) -> Path:
        from pipeline_assets.lib.market.demo_sources import write_demo_worker_files

        reference, root = base / "lake_reference", base / "lake_crash"
        days = [dt.date.fromisoformat(d) for d in LAKE_DAYS]
        write_demo_worker_files(reference / "source/workers", days, rows_per_day=300)
        shutil.copytree(reference / "source", root / "source")
        lake_work(str(reference))
        self.reference = tree_hashes(reference, LAKE_LAYERS, (".parquet",))
        self.reference_keys = _bronze_keys(reference)
        return root

    def before_attempt(self, workdir: Path, attempt: int, rng: random.Random) -> None:
        if attempt % 2 == 0:
            for layer in LAKE_LAYERS:
                shutil.rmtree(workdir / layer, ignore_errors=True)

    def work_args(self, workdir: Path, attempt: int) -> tuple[Any, ...]:
        return (str(workdir),)

    def rerun(self, workdir: Path, attempt: int) -> None:
        lake_work(str(workdir))

    def after_kill(self, workdir: Path) -> Inspection:
        found = Inspection()
        for layer in LAKE_LAYERS:
            for path in canonical_parquet(workdir / layer):
                problem = parquet_problem(path)
                if problem and problem.endswith("no sidecar"):
                    problem = None  # complete bytes whose sidecar the kill prevented; see below
                if problem:
                    found.partial_files += 1
                    found.problems.append(problem)
        # A checkpoint (the silver state's watermark) only after that day's silver files.
        state = workdir / "silver/_state/market_features"
        for checkpoint in sorted(state.glob("date=*")) if state.exists() else []:
            day = checkpoint.name.split("=", 1)[1]
            for asset in ("silver_orderbook_features", "silver_trade_features"):
                folder = workdir / "silver" / asset / f"date={day}"
                files = canonical_parquet(folder)
                if not files or any(parquet_problem(p) for p in files):
                    found.watermarks_ahead += 1
                    found.problems.append(f"checkpoint of {day} but {folder} is not complete")
        return found

    def after_rerun(self, workdir: Path, attempt: int) -> Inspection:
        found = Inspection()
        for layer in LAKE_LAYERS:
            for path in canonical_parquet(workdir / layer):
                problem = parquet_problem(path)
                if problem:
                    found.partial_files += 1
                    found.problems.append(problem)
        hashes = tree_hashes(workdir, LAKE_LAYERS, (".parquet",))
        if hashes != self.reference:
            found.rerun_differs += 1
            differing = sorted(
                k
                for k in hashes.keys() | self.reference.keys()
                if hashes.get(k) != self.reference.get(k)
            )
            found.problems.append(f"files differ from the clean run: {differing[:5]}")
        keys = _bronze_keys(workdir)
        found.rows_duplicated += len(keys) - len(set(keys))
        found.rows_lost += len(set(self.reference_keys) - set(keys))
        return found


# ---------------------------------------------------------------------------------------------
# GEX import: enqueue (download to staging) and import (DuckDB, canonical Parquet, job store)
# ---------------------------------------------------------------------------------------------

GEX_TICKER, GEX_ENDPOINT = "SPX", "gex_zero"


def _gex_importer(root: str) -> Any:
    from pipeline_assets.lib.gex.imports import GexConfig, GexImporter

    return GexImporter(root, GexConfig(download_attempts=2, backoff_base=0.01))


def gex_work(root: str, url: str) -> None:
    importer = _gex_importer(root)
    job = importer.enqueue(url, GEX_TICKER, GEX_ENDPOINT)
    importer.import_job(job.id)


def _strike_rows(root: Path, paths: list[str]) -> list[tuple[Any, ...]]:
    """The canonical rows of files, without the job id (which differs between imports)."""
    import duckdb

    con = duckdb.connect()
    files = [str(root / p) for p in paths]
    rows = con.execute(
        "SELECT * EXCLUDE (job_id) FROM read_parquet(?) ORDER BY ALL", [files]
    ).fetchall()
    con.close()
    return rows


class GexCrash:
    """One new gexbot history per attempt, enqueued and imported, killed anywhere from the
    download to the job's completion; the rerun imports what is pending, or enqueues again."""

    fault = "SIGKILL during a GEX enqueue and import"
    work = staticmethod(gex_work)

    def setup(self, base: Path) -> Path:
        self.sources = base / "gex_sources"
        self.reference = base / "gex_reference"
        self.urls: list[str] = []
        self.expected_rows: dict[str, int] = {}
        return base / "gex_crash"

    def before_attempt(self, workdir: Path, attempt: int, rng: random.Random) -> None:
        from pipeline_assets.lib.gex.demo_sources import snapshots, write_history

        day = dt.date(2026, 1, 1) + dt.timedelta(days=attempt)
        records = list(snapshots(GEX_TICKER, day, step_minutes=rng.choice([5, 10, 15])))
        path = write_history(self.sources / f"{day.isoformat()}_{GEX_TICKER}.json", records)
        url = path.resolve().as_uri()
        self.urls.append(url)
        # Independent count: one canonical row per strike of every snapshot.
        self.expected_rows[url] = sum(len(r["strikes"]) for r in records)
        gex_work(str(self.reference), url)  # the clean import to compare with

    def work_args(self, workdir: Path, attempt: int) -> tuple[Any, ...]:
        return (str(workdir), self.urls[attempt])

    def _jobs(self, root: Path, url: str) -> list[Any]:

        return [j for j in _gex_importer(str(root)).store.jobs() if j.url == url]

    def rerun(self, workdir: Path, attempt: int) -> None:
        url = self.urls[attempt]
        importer = _gex_importer(str(workdir))
        jobs = [j for j in importer.store.jobs() if j.url == url]
        if any(j.status == "completed" for j in jobs):
            return
        staged = [j for j in jobs if j.status == "pending" and j.checksum]
        if staged:
            importer.import_job(staged[0].id)
        else:
            gex_work(str(workdir), url)

    def after_kill(self, workdir: Path) -> Inspection:
        found = Inspection()
        for path in canonical_parquet(workdir / "parquet"):
            problem = parquet_problem(path)
            if problem and not problem.endswith("no sidecar"):
                found.partial_files += 1
                found.problems.append(problem)
        for path in sorted((workdir / "source/gexbot").glob("*.json")):
            sidecar = Path(str(path) + SIDECAR)
            problem = sidecar_mismatch(path) if sidecar.exists() else None
            if problem:
                found.partial_files += 1
                found.problems.append(problem)
        if (workdir / "gex_history.db").exists():
            for job in _gex_importer(str(workdir)).store.jobs(status="completed"):
                # A completed job is the import's watermark: its files must all be in place.
                bad = [f for f in job.canonical_files if parquet_problem(workdir / f)]
                if bad or not job.canonical_files:
                    found.watermarks_ahead += 1
                    found.problems.append(f"job {job.id} completed but {bad} are not complete")
        return found

    def after_rerun(self, workdir: Path, attempt: int) -> Inspection:
        import duckdb

        found = self.after_kill(workdir)
        importer = _gex_importer(str(workdir))
        jobs = importer.store.jobs()
        con = duckdb.connect(str(importer.paths.data_db), read_only=True)
        in_db = dict(con.execute("SELECT job_id, count(*) FROM strikes GROUP BY job_id").fetchall())
        con.close()
        for url in self.urls[: attempt + 1]:
            done = [j for j in jobs if j.url == url and j.status == "completed"]
            if not done:
                found.rows_lost += self.expected_rows[url]
                found.problems.append(f"{url}: no completed job after the rerun")
                continue
            if len(done) > 1:
                found.rows_duplicated += self.expected_rows[url] * (len(done) - 1)
                found.problems.append(f"{url}: imported {len(done)} times")
            job = done[0]
            rows = in_db.get(job.id, 0)
            found.rows_lost += max(0, self.expected_rows[url] - rows)
            found.rows_duplicated += max(0, rows - self.expected_rows[url])
            if url != self.urls[attempt]:
                continue  # compared with its clean import when it was this attempt's file
            reference = [j for j in self._jobs(self.reference, url) if j.status == "completed"]
            if _strike_rows(workdir, job.canonical_files) != _strike_rows(
                self.reference, reference[0].canonical_files
            ):
                found.rerun_differs += 1
                found.problems.append(f"job {job.id}: canonical rows differ from a clean import")
        # Jobs a kill left pending before their file was staged: never lost, but listed.
        stuck = [j.id for j in jobs if j.status == "pending"]
        if stuck:
            found.problems.append(f"pending jobs left by killed enqueues: {stuck}")
        return found


# ---------------------------------------------------------------------------------------------
# HQ export: Postgres windows to the five dx_*_v1 datasets and the dead letter
# ---------------------------------------------------------------------------------------------

HQ_SCHEMA = "faults_src"
HQ_WINDOWS = ("2026-02-17-00:00", "2026-02-17-02:00")
APPEND_ONLY = {
    "dx_operation_runs_v1": ("operation_runs", "created_at"),
    "dx_operation_events_v1": ("operation_events", "occurred_at"),
    "dx_entity_snapshots_v1": ("entity_snapshots", "captured_at"),
}


def hq_work(lake: str, dsn: str) -> None:
    import dagster as dg

    from pipeline_assets.defs.hq_export.assets import HQ_ASSET_KEYS, hq_export
    from pipeline_assets.resources.lake_io_manager import LakeIOManager
    from pipeline_assets.resources.source_postgres import SourcePostgres

    os.environ["PIPELINE_DATA_ROOT"] = lake  # the checks read the lake the IO manager writes
    os.environ.pop("PIPELINE_LAKE_ROOT", None)
    defs = dg.Definitions(
        assets=[hq_export],
        resources={
            "io_manager": LakeIOManager(lake_root=lake, fsync=False),
            "source_postgres": SourcePostgres(dsn=dsn, embedded_dir=str(Path(lake) / "unused")),
        },
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            asset_selection=list(HQ_ASSET_KEYS),
            tags=dict(zip(RANGE_TAGS, HQ_WINDOWS)),
            run_config={
                **QUIET,
                "ops": {"hq_export": {"config": {"source_schema": HQ_SCHEMA}}},
            },
            raise_on_error=False,
        )
    if not result.success:
        raise RuntimeError(
            f"hq_export failed: {[e.message for e in result.all_events if e.is_failure]}"
        )


def hq_counts(lake: Path) -> dict[str, tuple[int, int]]:
    """(rows, distinct primary keys) of each dataset, and dead-letter rows by dataset, by DuckDB."""
    import duckdb

    from pipeline_assets.lib.hq.datasets import DATASETS

    out: dict[str, tuple[int, int]] = {}
    con = duckdb.connect()
    for spec in DATASETS:
        files = [str(p) for p in canonical_parquet(lake / "hq" / spec.name)]
        if not files:
            out[spec.name] = (0, 0)
            continue
        key = ", ".join(spec.primary_key)
        out[spec.name] = con.execute(
            f"SELECT count(*), count(DISTINCT ({key})) FROM read_parquet(?)", [files]
        ).fetchone()
    dead = [str(p) for p in canonical_parquet(lake / "hq" / "dx_dead_letter")]
    if dead:
        for dataset, n in con.execute(
            "SELECT dataset, count(*) FROM read_parquet(?) GROUP BY dataset", [dead]
        ).fetchall():
            out[f"dead:{dataset}"] = (n, n)
    con.close()
    return out


class HqCrash:
    """Three hourly windows of the demo source exported in one run, killed anywhere from the
    first COPY to the last check; even attempts into an empty lake, odd ones over a full one."""

    fault = "SIGKILL during an HQ export"
    work = staticmethod(hq_work)

    def setup(self, base: Path) -> Path:
        import tempfile

        import psycopg

        from pipeline_assets.lib.hq.source_tables import (
            create_source_tables,
            demo_rows,
            insert_rows,
        )
        from pipeline_assets.lib.postgres import embedded_dsn

        # Not under pytest's basetemp (mode 0700): the server runs as its own user.
        self.pg_base = Path(tempfile.mkdtemp(prefix="faults_pg_"))
        self.pg_dir = self.pg_base / "postgres"
        self.dsn = embedded_dsn(self.pg_dir)
        with psycopg.connect(self.dsn) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {HQ_SCHEMA} CASCADE")
            create_source_tables(conn, HQ_SCHEMA)
            for table, rows in demo_rows([dt.date(2026, 2, 17)], hours=3).items():
                insert_rows(conn, table, rows, HQ_SCHEMA)
            # Independent count of the source rows in the exported windows, by plain SQL.
            self.source_counts = {
                name: conn.execute(
                    f"SELECT count(*) FROM {HQ_SCHEMA}.{table} WHERE {column} >= %s AND {column} < %s",
                    (
                        dt.datetime(2026, 2, 17, tzinfo=dt.UTC),
                        dt.datetime(2026, 2, 17, 3, tzinfo=dt.UTC),
                    ),
                ).fetchone()[0]
                for name, (table, column) in APPEND_ONLY.items()
            }
        reference = base / "hq_reference"
        hq_work(str(reference), self.dsn)
        self.reference = tree_hashes(reference, ["hq"], (".parquet",))
        self.reference_counts = hq_counts(reference)
        return base / "hq_crash"

    def teardown(self) -> None:
        import contextlib
        import subprocess

        from pipeline_assets.lib.postgres import stop_embedded

        with contextlib.suppress(subprocess.CalledProcessError):
            stop_embedded(self.pg_dir)
        shutil.rmtree(self.pg_base, ignore_errors=True)

    def before_attempt(self, workdir: Path, attempt: int, rng: random.Random) -> None:
        if attempt % 2 == 0:
            shutil.rmtree(workdir / "hq", ignore_errors=True)

    def work_args(self, workdir: Path, attempt: int) -> tuple[Any, ...]:
        return (str(workdir), self.dsn)

    def rerun(self, workdir: Path, attempt: int) -> None:
        hq_work(str(workdir), self.dsn)

    def after_kill(self, workdir: Path) -> Inspection:
        found = Inspection()
        for path in canonical_parquet(workdir / "hq"):
            problem = parquet_problem(path)
            if problem and not problem.endswith("no sidecar"):
                found.partial_files += 1
                found.problems.append(problem)
        return found

    def after_rerun(self, workdir: Path, attempt: int) -> Inspection:
        found = Inspection()
        for path in canonical_parquet(workdir / "hq"):
            problem = parquet_problem(path)
            if problem:
                found.partial_files += 1
                found.problems.append(problem)
        counts = hq_counts(workdir)
        for name, (rows, distinct) in counts.items():
            if not name.startswith("dead:"):
                found.rows_duplicated += rows - distinct
        for name, expected in self.source_counts.items():
            exported = counts.get(name, (0, 0))[0] + counts.get(f"dead:{name}", (0, 0))[0]
            found.rows_lost += max(0, expected - exported)
            found.rows_duplicated += max(0, exported - expected)
        if tree_hashes(workdir, ["hq"], (".parquet",)) != self.reference:
            found.rerun_differs += 1
            found.problems.append("hq files differ from the clean export")
        if found.rows_lost or found.rows_duplicated:
            found.problems.append(f"counts {counts} vs source {self.source_counts}")
        return found
