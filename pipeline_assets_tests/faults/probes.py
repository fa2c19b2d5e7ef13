"""Source faults, concurrency and security probes, each a plain function returning its figures.

The tests assert on these figures and `bench/faults.py` prints them, so the two never disagree.
Every probe drives real components: the embedded PostgreSQL stopped and started again, SQLite
files written by another process, `http.server` on loopback, real processes at the same time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import http.server
import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline_assets_tests.faults import crash_scenarios as cs


@dataclass
class ProbeResult:
    """One probe's figures; `ok` when every count that must be 0 is 0 and recovery happened."""

    fault: str
    runs: int = 0
    lost: int = 0
    duplicates: int = 0
    partial: int = 0
    errors: int = 0  # unexpected exceptions, lock errors, silent drops, leaks, as the probe says
    recovery: str = ""
    ok: bool = False
    details: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "runs tried": self.runs,
            "data lost": self.lost,
            "duplicates": self.duplicates,
            "partial files": self.partial,
            "recovery": self.recovery,
        }


# ---------------------------------------------------------------------------------------------
# Source faults
# ---------------------------------------------------------------------------------------------


def _hq_run_logged(lake: Path, dsn: str) -> tuple[bool, list[str]]:
    """One HQ export of the probe windows in this process; (success, every log message)."""
    import dagster as dg

    from pipeline_assets.defs.hq_export.assets import HQ_ASSET_KEYS, hq_export
    from pipeline_assets.resources.lake_io_manager import LakeIOManager
    from pipeline_assets.resources.source_postgres import SourcePostgres

    defs = dg.Definitions(
        assets=[hq_export],
        resources={
            "io_manager": LakeIOManager(lake_root=str(lake), fsync=False),
            "source_postgres": SourcePostgres(dsn=dsn, embedded_dir=str(lake / "unused")),
        },
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            asset_selection=list(HQ_ASSET_KEYS),
            tags=dict(zip(cs.RANGE_TAGS, cs.HQ_WINDOWS)),
            run_config={
                "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
                "ops": {"hq_export": {"config": {"source_schema": cs.HQ_SCHEMA}}},
            },
            raise_on_error=False,
        )
        # Whole serialized events: messages, metadata entries, check results, failures.
        logs = [dg.serialize_value(e) for e in instance.all_logs(result.run_id)]
    return result.success, logs


def probe_postgres_restart(base: Path, scenario: cs.HqCrash | None = None) -> ProbeResult:
    """PostgreSQL stopped while an HQ export runs, started again 2 s later: the run retries its
    read (saying so in the log) and completes with the rows of a clean run, none twice."""
    from pipeline_assets.lib.postgres import embedded_dsn, stop_embedded

    probe = ProbeResult("PostgreSQL stopped mid-export, restarted 2 s later")
    own = scenario is None
    scenario = scenario or cs.HqCrash()
    if own:
        scenario.setup(base)
    try:
        for attempt, when in enumerate(("first file written", "before the first read")):
            lake = base / f"pg_restart_{attempt}"
            import os

            os.environ["PIPELINE_DATA_ROOT"] = str(lake)
            outcome: dict[str, Any] = {}
            if when == "before the first read":
                stop_embedded(scenario.pg_dir)

            def run(lake: Path = lake, outcome: dict[str, Any] = outcome) -> None:
                outcome["success"], outcome["logs"] = _hq_run_logged(lake, scenario.dsn)

            refused = threading.Event()

            class Watch(logging.Handler):
                def emit(self, record: logging.LogRecord, refused: Any = refused) -> None:
                    if "retrying" in record.getMessage():
                        refused.set()

            watch = Watch()
            for name in ("", "dagster"):
                logging.getLogger(name).addHandler(watch)
            thread = threading.Thread(target=run)
            thread.start()
            try:
                if when == "first file written":
                    deadline = time.monotonic() + 300
                    while time.monotonic() < deadline and thread.is_alive():
                        if (lake / "hq").exists() and any((lake / "hq").rglob("*.parquet")):
                            break
                        time.sleep(0.005)
                    stop_embedded(scenario.pg_dir)
                    time.sleep(2.0)
                else:
                    # Down until the run has met the outage (its connect retries say so):
                    # however slow the run is to start, it reads during the outage.
                    refused.wait(300)
                embedded_dsn(scenario.pg_dir)
            finally:
                for name in ("", "dagster"):
                    logging.getLogger(name).removeHandler(watch)
            thread.join(600)
            probe.runs += 1
            logs = "\n".join(outcome.get("logs", []))
            retried = "retrying" in logs
            if not outcome.get("success"):
                probe.errors += 1
                probe.details.append(f"{when}: the run failed")
                continue
            found = scenario.after_rerun(lake, 0)
            probe.lost += found.rows_lost
            probe.duplicates += found.rows_duplicated + found.rerun_differs
            probe.partial += found.partial_files
            probe.details.append(f"{when}: completed, retry logged: {retried}")
            if when == "before the first read" and not retried:
                probe.errors += 1
                probe.details.append("the outage before the first read logged no retry")
    finally:
        embedded_dsn(scenario.pg_dir)
        if own:
            scenario.teardown()
    probe.ok = probe.errors == probe.lost == probe.duplicates == probe.partial == 0
    probe.recovery = f"{probe.runs - probe.errors}/{probe.runs} runs retried and completed"
    return probe


def collector_writer(path: str, seconds: float, counter: Any) -> None:
    """A collector: one tick per insert and commit, ingestion time = now, for `seconds`."""
    conn = sqlite3.connect(path, timeout=30)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        conn.execute(
            "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc,"
            " payload) VALUES ('Binance', 'ETHUSDT', 'ticker', ?, ?,"
            ' \'{"bid": 1, "ask": 2, "last": 1.5, "volume_24h": 3}\')',
            (now, now),
        )
        conn.commit()
        counter.value += 1
        time.sleep(0.001)
    conn.close()


def probe_collector_writing(base: Path, seconds: float = 6.0) -> ProbeResult:
    """Incremental staging exports while another process keeps inserting into a worker file:
    every export completes, and together they hold every row once."""
    import multiprocessing

    from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
    from pipeline_assets.lib.market.staging_export import export_options, run_staging_export

    probe = ProbeResult("collector writing its SQLite file during exports")
    root = base / "collector_writing"
    write_demo_worker_files(root / "source/workers", [cs.STAGING_DAY], rows_per_day=200)
    workers = sorted((root / "source/workers").glob("*.db"))
    ctx = multiprocessing.get_context("forkserver")
    counter = ctx.Value("i", 0)
    writer = ctx.Process(target=collector_writer, args=(str(workers[0]), seconds, counter))
    writer.start()

    def export() -> None:
        run_staging_export(
            export_options(
                hours=24 * 400,
                end_utc=dt.datetime.now(dt.UTC),
                incremental=True,
                update_state=True,
                state_key="live",
                chunk_size=500,
            ),
            worker_files=workers,
            input_glob="source/workers/*.db",
            data_root=root,
            staging_dir=root / "staging",
            lock_timeout_s=60,
        )

    while writer.is_alive():
        probe.runs += 1
        try:
            export()
        except Exception as exc:  # noqa: BLE001 - counted: a concurrent writer must not fail a run
            probe.errors += 1
            probe.details.append(f"export failed while the collector wrote: {exc}")
        time.sleep(0.3)
    writer.join()
    export()  # the rows written since the last run
    probe.runs += 1
    from pipeline_assets.lib.market.staging_export import read_export_rows

    got: list[tuple[str, int]] = []
    for metadata in sorted((root / "staging").glob("*_metadata.json")):
        for table in ("market_ticks", "rejects"):
            for row in read_export_rows(metadata, table):
                if table == "market_ticks" or row["source_table"] == "market_ticks":
                    got.append((row["source_file"], int(row["source_id"])))
    expected = set()
    for path in workers:
        conn = sqlite3.connect(path)
        expected |= {(path.name, i) for (i,) in conn.execute("SELECT id FROM market_ticks")}
        conn.close()
    probe.lost = len(expected - set(got))
    probe.duplicates = len(got) - len(set(got))
    probe.details.append(f"{counter.value} rows inserted during {probe.runs} exports")
    probe.ok = probe.errors == probe.lost == probe.duplicates == 0 and counter.value > 0
    probe.recovery = (
        f"{probe.runs - probe.errors}/{probe.runs} exports completed; "
        f"{counter.value} concurrent inserts all exported once"
    )
    return probe


def probe_bad_worker_files(base: Path) -> ProbeResult:
    """A worker file truncated and one replaced by garbage: the export and bronze refuse them by
    name, leave nothing behind, skip them when told to (listing why), and complete once fixed."""
    from pipeline_assets.lib.market.bronze import WorkerFileError, land_bronze_day
    from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
    from pipeline_assets.lib.market.staging_export import (
        StagingExportError,
        export_options,
        run_staging_export,
    )

    probe = ProbeResult("worker file truncated or replaced by garbage")
    root = base / "bad_workers"
    write_demo_worker_files(root / "source/workers", [cs.STAGING_DAY], rows_per_day=200)
    workers = sorted((root / "source/workers").glob("*.db"))
    originals = {p: p.read_bytes() for p in workers}
    staging = root / "staging"

    def export(**extra: Any) -> Any:
        return run_staging_export(
            export_options(hours=48, end_utc="2026-02-20T00:00:00Z", update_state=True, **extra),
            worker_files=workers,
            input_glob="source/workers/*.db",
            data_root=root,
            staging_dir=staging,
        )

    for damage, corrupt in (
        ("truncated", lambda data: data[: len(data) // 3]),
        ("garbage", lambda data: b"\x00garbage, not SQLite\xff" * 64),
    ):
        victim = workers[0]
        victim.write_bytes(corrupt(originals[victim]))
        for path in root.glob("source/workers/*-journal"):
            path.unlink()
        before = sorted(p.name for p in staging.iterdir()) if staging.exists() else []
        for reader, errors in (
            ("staging export", (StagingExportError, WorkerFileError)),
            ("bronze", (WorkerFileError,)),
        ):
            probe.runs += 1
            try:
                if reader == "staging export":
                    export()
                else:
                    land_bronze_day(workers, cs.STAGING_DAY)
            except errors as exc:
                if victim.name not in str(exc):
                    probe.errors += 1
                    probe.details.append(
                        f"{damage}/{reader}: the error does not name the file: {exc}"
                    )
            except Exception as exc:  # noqa: BLE001 - an unclear exception is the finding
                probe.errors += 1
                probe.details.append(f"{damage}/{reader}: unexpected {type(exc).__name__}: {exc}")
            else:
                probe.errors += 1
                probe.details.append(f"{damage}/{reader}: the damaged file was accepted silently")
        after = sorted(p.name for p in staging.iterdir()) if staging.exists() else []
        leftovers = [n for n in set(after) - set(before) if not n.startswith(".")]
        probe.partial += len(leftovers)
        probe.runs += 1
        skipped = export(skip_unreadable_sources=True)
        reasons = [s["file"] for s in skipped.metadata["skipped_sources"]]
        if not any(victim.name in r for r in reasons):
            probe.errors += 1
            probe.details.append(f"{damage}: skip_unreadable_sources did not list {victim.name}")
        victim.write_bytes(originals[victim])
        probe.runs += 1
        fixed = export(state_key=f"fixed_{damage}")
        if fixed.metadata["skipped_sources"] or fixed.metadata["row_counts"]["market_ticks"] == 0:
            probe.errors += 1
            probe.details.append(f"{damage}: the rerun after the fix did not read every file")
    probe.ok = probe.errors == probe.partial == 0
    probe.recovery = (
        "refused by name; skipped with reason on request; rerun after the fix completes"
    )
    return probe


class _FlakySource(http.server.BaseHTTPRequestHandler):
    """Serves one GEX history; `mode` decides how it fails: timeout, 500, cut (mid-body), ok."""

    mode = "ok"
    body = b""

    def do_GET(self) -> None:
        mode = type(self).mode
        if mode == "timeout":
            time.sleep(3.0)
        if mode == "500":
            self.send_response(500)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"oops\n")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        if mode == "cut":
            self.wfile.write(self.body[: len(self.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextlib.contextmanager
def flaky_source(body: bytes) -> Iterator[tuple[str, type[_FlakySource]]]:
    handler = type("Source", (_FlakySource,), {"body": body, "mode": "ok"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/history.json", handler
    finally:
        server.shutdown()
        server.server_close()


def probe_http_source_faults(base: Path) -> ProbeResult:
    """A GEX source that times out, answers 500, or closes mid-body: the job fails with the reason
    after bounded retries, nothing is staged at a canonical name, and it imports once fixed."""
    from pipeline_assets.lib.gex.demo_sources import snapshots
    from pipeline_assets.lib.gex.imports import GexConfig, GexImporter

    probe = ProbeResult("HTTP source times out, answers 500, closes mid-body")
    records = list(snapshots("SPX", dt.date(2026, 2, 19), step_minutes=30))
    body = json.dumps(records).encode()
    expected_rows = sum(len(r["strikes"]) for r in records)
    config = GexConfig(download_timeout=1.0, download_attempts=2, backoff_base=0.01)
    expectations = {"timeout": "timed out", "500": "500", "cut": "byte"}
    with flaky_source(body) as (url, handler):
        for mode, words in expectations.items():
            root = base / f"http_{mode}"
            importer = GexImporter(root, config)
            handler.mode = mode
            probe.runs += 1
            job = importer.enqueue(url, "SPX", "gex_zero")
            staged = (
                [p for p in (root / "source/gexbot").glob("*") if not p.name.startswith(".")]
                if (root / "source/gexbot").exists()
                else []
            )
            probe.partial += len(staged)
            if job.status != "failed" or words not in (job.last_error or "").lower():
                probe.errors += 1
                probe.details.append(f"{mode}: job {job.status}, last_error {job.last_error!r}")
            handler.mode = "ok"
            probe.runs += 1
            again = importer.enqueue(url, "SPX", "gex_zero")
            done = importer.import_job(again.id)
            if done.status != "completed" or done.rows_written != expected_rows:
                probe.lost += expected_rows - (done.rows_written or 0)
                probe.details.append(f"{mode}: the rerun ended {done.status}: {done.last_error}")
    probe.ok = probe.errors == probe.partial == probe.lost == 0
    probe.recovery = "each fault fails its job with the reason; the rerun after the fix imports"
    return probe


# ---------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------


def gex_client(root: str, urls: list[str]) -> None:
    """One client process: enqueue its files and import whatever is pending, as fast as it can."""
    from pipeline_assets.lib.gex.imports import GexConfig, GexImporter

    importer = GexImporter(root, GexConfig(lock_timeout=120.0))
    for url in urls:
        importer.enqueue(url, "SPX", "gex_zero")
        importer.import_pending()


def probe_gex_concurrency(base: Path, processes: int = 4, files_each: int = 3) -> ProbeResult:
    """Several processes enqueue and import at the same time, each with threads: no lock error,
    no job lost, every file's rows in the store once."""
    import multiprocessing

    import duckdb

    from pipeline_assets.lib.gex.demo_sources import snapshots, write_history
    from pipeline_assets.lib.gex.imports import GexImporter

    probe = ProbeResult("GEX imports and enqueues at once")
    root, sources = base / "gex_concurrency", base / "gex_concurrency_sources"
    urls, expected = [], {}
    for i in range(processes * files_each):
        day = dt.date(2026, 3, 1) + dt.timedelta(days=i)
        records = list(snapshots("SPX", day, step_minutes=30))
        path = write_history(sources / f"{day}.json", records)
        urls.append(path.resolve().as_uri())
        expected[urls[-1]] = sum(len(r["strikes"]) for r in records)
    ctx = multiprocessing.get_context("forkserver")
    procs = [
        ctx.Process(target=gex_client, args=(str(root), urls[i::processes]))
        for i in range(processes)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(600)
        probe.runs += 1
        if proc.exitcode != 0:
            probe.errors += 1
            probe.details.append(f"a client process ended with {proc.exitcode}")
    importer = GexImporter(root)
    jobs = importer.store.jobs()
    locked = [j for j in jobs if "lock" in (j.last_error or "").lower()]
    probe.errors += len(locked)
    con = duckdb.connect(str(importer.paths.data_db), read_only=True)
    rows = dict(con.execute("SELECT job_id, count(*) FROM strikes GROUP BY job_id").fetchall())
    con.close()
    for url, n in expected.items():
        done = [j for j in jobs if j.url == url and j.status == "completed"]
        if len(done) != 1:
            probe.lost += n if not done else 0
            probe.duplicates += n * max(0, len(done) - 1)
            probe.details.append(f"{url}: {len(done)} completed jobs")
            continue
        got = rows.get(done[0].id, 0)
        probe.lost += max(0, n - got)
        probe.duplicates += max(0, got - n)
    probe.details.append(f"{len(jobs)} jobs, {len(locked)} lock errors")
    probe.ok = probe.errors == probe.lost == probe.duplicates == 0
    probe.recovery = f"{len(locked)} lock errors, {probe.lost} rows of lost jobs"
    return probe


def market_backfill(root: str, job: str, first: str, last: str) -> None:
    """One single-run backfill of the market data, as the UI launches it."""
    import dagster as dg

    from pipeline_assets.defs.market_data.bronze import bronze_market_data
    from pipeline_assets.defs.market_data.features_jobs import market_features_job
    from pipeline_assets.defs.market_data.gold import gold_bars_1m
    from pipeline_assets.defs.market_data.jobs import bronze_job
    from pipeline_assets.defs.market_data.silver import silver_market_features
    from pipeline_assets.resources.lake_io_manager import LakeIOManager
    from pipeline_assets_tests.market_data.feature_reference import market_resources

    defs = dg.Definitions(
        assets=[bronze_market_data, silver_market_features, gold_bars_1m],
        jobs=[bronze_job, market_features_job],
        resources={
            **market_resources(Path(root)),
            "io_manager": LakeIOManager(lake_root=root, fsync=False),
        },
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(job).execute_in_process(
            instance=instance,
            tags=dict(zip(cs.RANGE_TAGS, (first, last))),
            raise_on_error=False,
            run_config=cs.QUIET,
        )
    if not result.success:
        raise RuntimeError(
            f"{job} {first}..{last}: {[e.message for e in result.all_events if e.is_failure]}"
        )


def probe_overlapping_backfills(base: Path) -> ProbeResult:
    """Two backfills of overlapping days at once (bronze, then silver and gold): both complete
    and the lake equals one sequential backfill of the whole range, byte for byte."""
    import multiprocessing

    from pipeline_assets.lib.market.demo_sources import write_demo_worker_files

    probe = ProbeResult("two overlapping market-day backfills at once")
    days = ["2026-02-17", "2026-02-18", "2026-02-19"]
    reference, root = base / "overlap_reference", base / "overlap"
    write_demo_worker_files(
        reference / "source/workers", [dt.date.fromisoformat(d) for d in days], rows_per_day=200
    )
    shutil.copytree(reference / "source", root / "source")
    for job in ("bronze_job", "market_features_job"):
        market_backfill(str(reference), job, days[0], days[-1])
    ctx = multiprocessing.get_context("forkserver")
    for job, ranges in (
        ("bronze_job", [(days[0], days[1]), (days[1], days[2])]),
        ("market_features_job", [(days[0], days[1]), (days[0], days[2])]),
    ):
        procs = [
            ctx.Process(target=market_backfill, args=(str(root), job, a, b)) for a, b in ranges
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(900)
            probe.runs += 1
            if proc.exitcode != 0:
                probe.errors += 1
                probe.details.append(f"{job}: a backfill ended with {proc.exitcode}")
    want = cs.tree_hashes(reference, cs.LAKE_LAYERS, (".parquet",))
    got = cs.tree_hashes(root, cs.LAKE_LAYERS, (".parquet",))
    probe.lost = len(set(want) - set(got))
    differing = sorted(k for k in want.keys() & got.keys() if want[k] != got[k])
    probe.duplicates = len(set(got) - set(want))
    probe.partial = sum(1 for p in cs.canonical_parquet(root) if cs.parquet_problem(p))
    if differing:
        probe.errors += len(differing)
        probe.details.append(f"files differing from a sequential backfill: {differing[:5]}")
    probe.ok = probe.errors == probe.lost == probe.duplicates == probe.partial == 0
    probe.recovery = (
        f"{probe.runs - probe.errors}/{probe.runs} runs completed; lake equals a sequential run"
        if probe.ok
        else "see details"
    )
    return probe


def _reconcile_run(lake: str, dsn: str) -> None:
    """The `hq_reconciliation` job over the probe windows, as the schedule would launch it."""
    import os

    import dagster as dg

    from pipeline_assets.defs.hq_export.assets import hq_export
    from pipeline_assets.defs.hq_export.reconciliation_checks import hq_reconciliation_checks
    from pipeline_assets.defs.hq_export.reconciliation_jobs import hq_reconciliation_job
    from pipeline_assets.resources.lake_io_manager import LakeIOManager
    from pipeline_assets.resources.source_postgres import SourcePostgres

    os.environ["PIPELINE_DATA_ROOT"] = lake
    defs = dg.Definitions(
        assets=[hq_export],
        asset_checks=[hq_reconciliation_checks],
        jobs=[hq_reconciliation_job],
        resources={
            "io_manager": LakeIOManager(lake_root=lake, fsync=False),
            "source_postgres": SourcePostgres(dsn=dsn, embedded_dir=str(Path(lake) / "unused")),
        },
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("hq_reconciliation").execute_in_process(
            instance=instance,
            run_config={
                **cs.QUIET,
                "ops": {
                    "hq_reconciliation_checks": {
                        "config": {
                            "start_utc": "2026-02-17T00:00:00Z",
                            "end_utc": "2026-02-17T03:00:00Z",
                            "source_schema": cs.HQ_SCHEMA,
                        }
                    }
                },
            },
            raise_on_error=False,
        )
    if not result.success:
        raise RuntimeError(
            f"hq_reconciliation: {[e.message for e in result.all_events if e.is_failure]}"
        )


def probe_microbatch_and_reconciliation(
    base: Path, scenario: cs.HqCrash | None = None
) -> ProbeResult:
    """An HQ micro-batch and the reconciliation at the same time: neither fails on a lock, and
    the export equals a clean one."""
    import multiprocessing

    probe = ProbeResult("HQ micro-batch and reconciliation at once")
    own = scenario is None
    scenario = scenario or cs.HqCrash()
    if own:
        scenario.setup(base)
    lake = base / "microbatch_reconcile"
    try:
        cs.hq_work(str(lake), scenario.dsn)  # a first export, for the reconciliation to compare
        ctx = multiprocessing.get_context("forkserver")
        procs = {
            "micro-batch": ctx.Process(target=cs.hq_work, args=(str(lake), scenario.dsn)),
            "reconciliation": ctx.Process(target=_reconcile_run, args=(str(lake), scenario.dsn)),
        }
        for proc in procs.values():
            proc.start()
        for name, proc in procs.items():
            proc.join(900)
            probe.runs += 1
            if proc.exitcode != 0:
                probe.errors += 1
                probe.details.append(f"{name} ended with {proc.exitcode}")
        found = scenario.after_rerun(lake, 0)
        probe.lost, probe.duplicates = found.rows_lost, found.rows_duplicated
        probe.partial = found.partial_files
        probe.errors += found.rerun_differs
        probe.details.extend(found.problems)
    finally:
        if own:
            scenario.teardown()
    probe.ok = probe.errors == probe.lost == probe.duplicates == probe.partial == 0
    probe.recovery = f"{probe.runs - probe.errors}/{probe.runs} runs completed, no lock error"
    return probe


# ---------------------------------------------------------------------------------------------
# Security
# ---------------------------------------------------------------------------------------------

PLANTED = {
    "stripe": "sk_live_PLANTEDfaults0secret0abc",
    "aws": "AKIAPLANTEDFAULTS0001",
    "password": "Planted-Pa55word-xyz",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.c2lnbmF0dXJlcGxhbnRlZA",
}


def _planted_text(i: int) -> str:
    forms = [
        f"call failed with api_key={PLANTED['password']}",
        f"Authorization: Bearer {PLANTED['jwt']}",
        f"token {PLANTED['stripe']} rejected",
        f"aws key {PLANTED['aws']}",
        f"password: {PLANTED['password']}",
    ]
    return forms[i % len(forms)]


def plant_credentials(dsn: str, schema: str) -> int:
    """Add rows in the probe windows whose every free-text and JSON value carries a credential."""
    import psycopg

    from pipeline_assets.lib.hq.datasets import DATASETS

    planted = 0
    with psycopg.connect(dsn) as conn:
        for spec in DATASETS:
            cols = conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                (schema, spec.table),
            ).fetchall()
            rows = conn.execute(f"SELECT * FROM {schema}.{spec.table} LIMIT 5").fetchall()
            names = [c for c, _ in cols]
            types = dict(cols)
            # Free text (the contract's *_message columns), JSON, and the columns that are not
            # in the contract at all (internal notes, provider credentials).
            free = set(spec.free_text_columns) | {c for c in names if c not in spec.source_columns}
            for i, row in enumerate(rows):
                values = dict(zip(names, row, strict=False))
                for name in names:
                    if types[name] == "jsonb":
                        values[name] = json.dumps({
                            "api_key": PLANTED["stripe"], "note": _planted_text(i),
                            "nested": {"password": PLANTED["password"], "list": [_planted_text(i + 1)]},
                        })  # fmt: skip
                    elif types[name] == "text" and name in free:
                        values[name] = _planted_text(i)
                # A new key: the same row again would be a duplicate, not a planted secret.
                for key in spec.primary_key:
                    if types.get(key) == "text" and key not in ("org_id", "company_id"):
                        values[key] = f"planted-{i}-{values[key]}"
                placeholders = ", ".join(["%s"] * len(names))
                conn.execute(
                    f"INSERT INTO {schema}.{spec.table} ({', '.join(names)}) VALUES ({placeholders})",
                    [
                        psycopg.types.json.Jsonb(json.loads(values[n]))
                        if types[n] == "jsonb" and isinstance(values[n], str)
                        else values[n]
                        for n in names
                    ],
                )
                planted += 1
    return planted


def _leaks(data: bytes) -> list[str]:
    return [name for name, secret in PLANTED.items() if secret.encode() in data]


def probe_planted_credentials(base: Path, scenario: cs.HqCrash | None = None) -> ProbeResult:
    """Credentials planted in every free-text and JSON field of the source, and in a GEX URL, never
    reach an output byte, a sidecar, a log line or a metadata entry."""
    from pipeline_assets.lib.gex.demo_sources import snapshots
    from pipeline_assets.lib.gex.imports import GexConfig, GexImporter

    probe = ProbeResult("credentials planted in source text, JSON and URLs")
    own = scenario is None
    scenario = scenario or cs.HqCrash()
    if own:
        scenario.setup(base)
    lake = base / "planted"
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keeper = Keep(level=logging.DEBUG)
    logging.getLogger().addHandler(keeper)
    try:
        import os

        os.environ["PIPELINE_DATA_ROOT"] = str(lake)
        planted = plant_credentials(scenario.dsn, cs.HQ_SCHEMA)
        probe.runs += 1
        success, logs = _hq_run_logged(lake, scenario.dsn)
        if not success:
            probe.errors += 1
            probe.details.append("the export of planted rows failed")
        scanned = 0
        for path in sorted(lake.rglob("*")):
            if path.is_file():
                scanned += 1
                for leak in _leaks(path.read_bytes()):
                    probe.errors += 1
                    probe.details.append(f"{leak} credential in {path.relative_to(lake)}")
        for leak in _leaks("\n".join(logs).encode()):
            probe.errors += 1
            probe.details.append(f"{leak} credential in the run's event log or metadata")
        # A GEX URL with credentials in its user info and query.
        secret_url_root = base / "planted_gex"
        importer_log: list[str] = []
        importer = GexImporter(
            secret_url_root, GexConfig(download_attempts=1), log=importer_log.append
        )
        with flaky_source(
            json.dumps(list(snapshots("SPX", dt.date(2026, 2, 19), step_minutes=60))).encode()
        ) as (url, _handler):
            host = url.split("//", 1)[1]
            secret_url = f"http://user:{PLANTED['password']}@{host}?api_key={PLANTED['stripe']}"
            probe.runs += 1
            job = importer.enqueue(secret_url, "SPX", "gex_zero")
            importer.import_job(job.id)
        for path in sorted(secret_url_root.rglob("*")):
            if path.is_file():
                scanned += 1
                for leak in _leaks(path.read_bytes()):
                    probe.errors += 1
                    probe.details.append(f"{leak} credential in {path.relative_to(base)}")
        text = "\n".join(importer_log) + json.dumps([j.as_json() for j in importer.store.jobs()])
        for leak in _leaks(text.encode()):
            probe.errors += 1
            probe.details.append(f"{leak} credential in the GEX log or job store")
        for leak in _leaks("\n".join(r.getMessage() for r in records).encode()):
            probe.errors += 1
            probe.details.append(f"{leak} credential in a Python log record")
        probe.details.append(f"{planted} planted rows, {scanned} files scanned")
    finally:
        logging.getLogger().removeHandler(keeper)
        if own:
            scenario.teardown()
    probe.ok = probe.errors == 0
    probe.recovery = f"{probe.errors} leaks in output bytes, sidecars, logs and metadata"
    return probe


TRAVERSALS = ["../etc", "..", "a/b", "a\\b", "/abs", "x/../../y", "..%2f..", "~root", ""]


def probe_path_traversal(base: Path) -> ProbeResult:
    """Every user-supplied name that becomes part of a path refuses traversal: GEX ticker and
    endpoint (CLI, HTTP and library), the staging state key, lake partition values."""
    from pipeline_assets.lib.gex.imports import GexImporter
    from pipeline_assets.lib.gex.store import GexInputError
    from pipeline_assets.lib.market.staging_export import StagingExportError, export_options
    from pipeline_assets.lib.parquet_lake import LakeError, hive_segment

    probe = ProbeResult("path traversal in user-supplied names")
    importer = GexImporter(base / "traversal")
    source = base / "traversal_source.json"
    source.write_text("[]")
    for name in TRAVERSALS:
        for field_name in ("ticker", "endpoint"):
            probe.runs += 1
            args = {"ticker": "SPX", "endpoint": "gex_zero", field_name: name}
            try:
                importer.enqueue(source.as_uri(), args["ticker"], args["endpoint"])
            except GexInputError:
                continue
            probe.errors += 1
            probe.details.append(f"GEX {field_name} {name!r} accepted")
        probe.runs += 1
        try:
            export_options(state_key=name)
        except StagingExportError:
            pass
        else:
            probe.errors += 1
            probe.details.append(f"staging state_key {name!r} accepted")
        probe.runs += 1
        try:
            segment = hive_segment("date", name)
        except (LakeError, ValueError):
            segment = None
        # `date=..` is a folder of that literal name; only a separator could leave the folder.
        if segment is not None and ("/" in segment or "\\" in segment):
            probe.errors += 1
            probe.details.append(f"lake partition value {name!r} became {segment!r}")
    written = [p for p in base.rglob("*") if p.is_file() and "traversal" not in p.name]
    outside = [p for p in written if not str(p).startswith(str(base))]
    probe.partial = len(outside)
    probe.ok = probe.errors == 0 and not outside
    probe.recovery = f"{probe.runs - probe.errors}/{probe.runs} names refused"
    return probe


def _post(port: int, body: bytes, content_type: str = "application/json") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/gex_history_url", body=body, headers={"Content-Type": content_type})
        return conn.getresponse().status
    except (ConnectionResetError, BrokenPipeError):
        return 413  # the server closed the connection before reading an oversized body
    finally:
        conn.close()


def probe_http_endpoint(base: Path) -> ProbeResult:
    """`POST /gex_history_url` refuses oversized bodies and non-JSON, and binds loopback by default."""
    from pipeline_assets.lib.gex.imports import GexImporter
    from pipeline_assets.lib.gex.server import MAX_BODY_BYTES, make_server

    probe = ProbeResult("HTTP endpoint: oversized, non-JSON, bind address")
    importer = GexImporter(base / "endpoint")
    server = make_server(importer, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    cases: list[tuple[str, Callable[[], int], set[int]]] = [
        ("oversized body", lambda: _post(port, b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}"), {413}),
        ("not JSON", lambda: _post(port, b"url=http://x&ticker=SPX"), {400}),
        ("text/plain", lambda: _post(port, b'{"url": "x"}', "text/plain"), {415}),
        ("JSON list", lambda: _post(port, b"[1, 2]"), {400}),
        ("invalid UTF-8", lambda: _post(port, b'{"url": "\xff\xfe"}'), {400}),
    ]
    try:
        for name, send, allowed in cases:
            probe.runs += 1
            status = send()
            if status not in allowed:
                probe.errors += 1
                probe.details.append(f"{name}: answered {status}, expected {sorted(allowed)}")
        if server.server_address[0] != "127.0.0.1":
            probe.errors += 1
            probe.details.append(f"make_server binds {server.server_address[0]} by default")
    finally:
        server.shutdown()
        server.server_close()
    probe.runs += 1
    default_host = _cli_default_host()
    if default_host not in ("127.0.0.1", "localhost", "::1"):
        probe.errors += 1
        probe.details.append(f"`pipeline gex serve` binds {default_host!r} by default")
    jobs = importer.store.jobs() if (base / "endpoint/gex_history.db").exists() else []
    if jobs:
        probe.errors += len(jobs)
        probe.details.append(f"refused requests created {len(jobs)} jobs")
    probe.ok = probe.errors == 0
    probe.recovery = f"{probe.runs - probe.errors}/{probe.runs} requests refused as they should be"
    return probe


def _cli_default_host() -> str:
    """The `--host` default of `pipeline gex serve`, read from the real argument parser."""
    from pipeline_assets import cli

    return cli.build_parser().parse_args(["gex", "serve"]).host
