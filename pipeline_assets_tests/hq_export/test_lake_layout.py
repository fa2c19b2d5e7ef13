"""The export's lake layout, on a real Dagster run, real Postgres and real files: windows under
`date=<YYYY-MM-DD>/hour=<HH>/` with one `org_id=<org>` folder per org, the lake_files functions
finding exactly what the IO manager wrote (on local disk and on S3), a rewrite dropping orgs gone
from the window, and the old `window_start=<key>/` copies of a rewritten window removed."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import socket
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import s3fs
from moto.server import ThreadedMotoServer
from upath import UPath

from pipeline_assets.defs.hq_export.assets import HQ_ASSET_KEYS, hq_export
from pipeline_assets.lib.hq.datasets import DATASETS_BY_NAME
from pipeline_assets.lib.hq.lake_files import (
    dataset_files,
    remove_legacy_windows,
    window_files,
    window_folder,
    window_keys,
)
from pipeline_assets.lib.hq.reconcile_quality import newest_exported
from pipeline_assets.lib.hq.source_tables import insert_rows
from pipeline_assets.resources.lake_io_manager import LakeIOManager
from pipeline_assets.resources.source_postgres import SourcePostgres

RUNS = "dx_operation_runs_v1"
EVENTS = "dx_operation_events_v1"
# Two windows on two dates, so the date folder changes between them.
LATE, EARLY = "2026-02-17-23:00", "2026-02-18-00:00"
LATE_START = dt.datetime(2026, 2, 17, 23, tzinfo=dt.UTC)


def _run(run_id: str, org: str, created: dt.datetime) -> dict:
    return {
        "run_id": run_id,
        "org_id": org,
        "status": "succeeded",
        "entity_type": "company",
        "entity_id": "e-" + run_id,
        "operation_id": "company.enrich.profile",
        "action_id": "a",
        "attempt_count": 1,
        "started_at": created,
        "created_at": created,
    }


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "lake"
    monkeypatch.setenv("PIPELINE_DATA_ROOT", str(root))  # the checks read what the run wrote
    monkeypatch.delenv("PIPELINE_LAKE_ROOT", raising=False)
    return root


def _export(lake: Path, dsn: str, schema: str, first: str, last: str | None = None):
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
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last or first,
            },
            run_config={"ops": {"hq_export": {"config": {"source_schema": schema}}}},
            raise_on_error=False,
        )
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    return result, logs


def _relative(lake: Path, paths) -> list[str]:
    return sorted(str(Path(str(p)).relative_to(lake)) for p in paths)


def _insert(dsn: str, schema: str, rows: list[dict]) -> None:
    with psycopg.connect(dsn) as conn:
        insert_rows(conn, "operation_runs", rows, schema)


def test_windows_are_folders_by_date_and_hour_with_one_folder_per_org(lake, pg_dsn, source_schema):
    _insert(
        pg_dsn,
        source_schema,
        [
            _run("r1", "org-a", LATE_START + dt.timedelta(minutes=5)),
            _run("r2", "org-b", LATE_START + dt.timedelta(minutes=50)),
            _run("r3", "org-a", LATE_START + dt.timedelta(hours=1, minutes=1)),
        ],
    )
    result, _ = _export(lake, pg_dsn, source_schema, LATE, EARLY)

    written = _relative(lake, lake.rglob("*.parquet"))
    runs = [p for p in written if p.startswith(f"hq/{RUNS}/")]
    assert runs == [
        f"hq/{RUNS}/date=2026-02-17/hour=23/org_id=org-a/data.parquet",
        f"hq/{RUNS}/date=2026-02-17/hour=23/org_id=org-b/data.parquet",
        f"hq/{RUNS}/date=2026-02-18/hour=00/org_id=org-a/data.parquet",
    ]
    assert all((lake / p).with_name("data.parquet.meta.json").exists() for p in runs)

    # What the lake_files functions find is what the IO manager reported writing.
    reported = sorted(
        path
        for event in result.get_asset_materialization_events()
        if event.asset_key == dg.AssetKey(RUNS)
        for path in event.materialization.metadata["output_files"].value
    )
    by_window = window_files(str(lake), RUNS, [LATE, EARLY])
    assert _relative(lake, by_window[LATE] + by_window[EARLY]) == reported == runs
    assert _relative(lake, dataset_files(str(lake), RUNS)) == runs
    assert window_keys(str(lake), RUNS) == [LATE, EARLY]
    # The reconciliation's lag finds the newest exported row through them.
    assert newest_exported(str(lake), DATASETS_BY_NAME[RUNS]) == LATE_START + dt.timedelta(
        hours=1, minutes=1
    )

    # A window without rows is its folder with the empty marker, and still counts as written.
    assert window_files(str(lake), EVENTS, [LATE, EARLY]) == {LATE: [], EARLY: []}
    assert window_keys(str(lake), EVENTS) == [LATE, EARLY]
    empty = Path(str(window_folder(str(lake), EVENTS, LATE)))
    assert empty == lake / f"hq/{EVENTS}/date=2026-02-17/hour=23"
    assert [p.name for p in empty.iterdir()] == ["_empty.json"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_rewrite_removes_the_files_of_orgs_no_longer_in_the_window(lake, pg_dsn, source_schema):
    _insert(
        pg_dsn,
        source_schema,
        [
            _run("r1", "org-a", LATE_START + dt.timedelta(minutes=5)),
            _run("r2", "org-b", LATE_START + dt.timedelta(minutes=6)),
            _run("r3", "org-b", LATE_START + dt.timedelta(hours=1, minutes=1)),
        ],
    )
    _export(lake, pg_dsn, source_schema, LATE, EARLY)
    window = Path(str(window_folder(str(lake), RUNS, LATE)))
    kept = window / "org_id=org-a/data.parquet"
    before = _digest(kept)
    other_window = {p: _digest(p) for p in (lake / f"hq/{RUNS}/date=2026-02-18").rglob("*.*")}

    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f"DELETE FROM {source_schema}.operation_runs WHERE run_id = 'r2'")
    _export(lake, pg_dsn, source_schema, LATE)
    assert sorted(p.name for p in window.iterdir()) == ["org_id=org-a"]
    assert _digest(kept) == before
    assert {p: _digest(p) for p in (lake / f"hq/{RUNS}/date=2026-02-18").rglob("*.*")} == (
        other_window
    )

    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f"DELETE FROM {source_schema}.operation_runs WHERE run_id = 'r1'")
    _export(lake, pg_dsn, source_schema, LATE)
    assert [p.name for p in window.iterdir()] == ["_empty.json"]
    assert window_files(str(lake), RUNS, [LATE]) == {LATE: []}
    assert window_keys(str(lake), RUNS) == [LATE, EARLY]


def test_a_rewritten_window_loses_its_copy_from_before_the_date_level(lake, pg_dsn, source_schema):
    _insert(pg_dsn, source_schema, [_run("r1", "org-a", LATE_START + dt.timedelta(minutes=5))])
    _export(lake, pg_dsn, source_schema, LATE)
    current = Path(str(window_folder(str(lake), RUNS, LATE)))
    # A lake written before the date level: the same window, and an older one, at window_start=.
    legacy = {
        key: lake / f"hq/{RUNS}/window_start={key.replace(':', '%3A')}"
        for key in (LATE, "2026-02-17-22:00")
    }
    for folder in legacy.values():
        shutil.copytree(current, folder)

    _, logs = _export(lake, pg_dsn, source_schema, LATE)
    assert not legacy[LATE].exists()
    assert (legacy["2026-02-17-22:00"] / "org_id=org-a/data.parquet").exists()
    assert any(str(legacy[LATE]) in (m or "") and "before the date level" in m for m in logs)
    # Legacy folders are not windows of today's layout.
    assert window_keys(str(lake), RUNS) == [LATE]
    assert _relative(lake, dataset_files(str(lake), RUNS)) == [
        f"hq/{RUNS}/date=2026-02-17/hour=23/org_id=org-a/data.parquet"
    ]


@pytest.fixture
def s3_lake(monkeypatch: pytest.MonkeyPatch):
    """An empty lake root on an S3-compatible server on loopback (moto, real HTTP)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    options = {"key": "test-key-id", "secret": "test-secret", "endpoint_url": endpoint}
    s3fs.S3FileSystem(**options).mkdir("hq-layout")
    yield UPath("s3://hq-layout/lake", **options)
    server.stop()


def test_the_lake_files_functions_work_alike_on_object_storage(s3_lake):
    # Object storage has no folders: windows are found from their files.
    written = [
        window_folder(s3_lake, RUNS, LATE) / "org_id=org-a" / "data.parquet",
        window_folder(s3_lake, RUNS, LATE) / "org_id=org-b" / "data.parquet",
        window_folder(s3_lake, RUNS, EARLY) / "_empty.json",
        s3_lake / f"hq/{RUNS}/window_start=2026-02-17-23%3A00/org_id=org-a/data.parquet",
        s3_lake / f"hq/{RUNS}/window_start=2026-02-17-22%3A00/org_id=org-a/data.parquet",
    ]
    for path in written:
        path.write_bytes(b"x")

    assert window_keys(s3_lake, RUNS) == [LATE, EARLY]
    files = window_files(s3_lake, RUNS, [LATE, EARLY])
    assert [p.path for p in files[LATE]] == [p.path for p in written[:2]]
    assert files[EARLY] == []
    assert [p.path for p in dataset_files(s3_lake, RUNS)] == [p.path for p in written[:2]]

    removed = remove_legacy_windows(s3_lake, RUNS, [LATE])
    assert [p.name for p in removed] == ["window_start=2026-02-17-23%3A00"]
    assert not written[3].exists() and written[4].exists()
    assert all(p.exists() for p in written[:3])
