"""The production profile (`deploy/dagster.production.yaml`) runs the demo's whole backfill on
Dagster's distributed pieces, and writes the same Parquet bytes as one machine.

The profile's instance stores runs, events and schedules in PostgreSQL (the embedded server); the
backfill is queued and launched by a `dagster-daemon` process, each run executes its steps with the
multiprocess executor, runs proceed in parallel under the pools, and the lake is on an S3 server
on loopback. The single-machine reference is `pipeline demo` on SQLite with a local lake, on the
same sources.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
import time
from pathlib import Path

import dagster as dg
import psycopg
import pyarrow.parquet as pq
import pytest
import s3fs
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.definitions.selector import (
    PartitionRangeSelector,
    PartitionsByAssetSelector,
    PartitionsSelector,
)
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.utils import make_new_backfill_id

from pipeline_assets.demo import (
    DEMO_ASSET_CONFIG,
    DEMO_DYNAMIC_PARTITIONS,
    demo_targets,
    generate_demo_sources,
)
from pipeline_assets.lib.settings import Settings
from pipeline_assets_tests.deploy.conftest import S3_KEY, S3_SECRET, PostgresServer, S3Server
from pipeline_assets_tests.deploy.daemon import (
    BIN,
    REPO,
    clean_env,
    running_daemon,
    stop_automation,
)

PROFILE = REPO / "deploy" / "dagster.production.yaml"
LAKE_LAYERS = ("bronze", "silver", "gold", "hq")
LAKE_PREFIX = "production"
BACKFILL_TIMEOUT_S = 1500
FINISHED = {
    BulkActionStatus.COMPLETED,
    BulkActionStatus.COMPLETED_SUCCESS,
    BulkActionStatus.COMPLETED_FAILED,
    BulkActionStatus.FAILED,
    BulkActionStatus.CANCELED,
}
# The demo's run config (the staging export's window over the demo days) and the executor every
# run of the backfill uses: steps in their own processes, two at a time on these 2-core machines.
BACKFILL_RUN_CONFIG = {
    "execution": {"config": {"multiprocess": {"max_concurrent": 2}}},
    "ops": {name: {"config": config} for name, config in DEMO_ASSET_CONFIG.items()},
}


def _sha256_by_path(files: dict[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}


def _local_parquet(root: Path, layers: tuple[str, ...]) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for layer in layers
        for p in sorted((root / layer).rglob("*.parquet"))
    }


def _s3_parquet(s3: S3Server) -> dict[str, bytes]:
    fs = s3fs.S3FileSystem(
        key=S3_KEY, secret=S3_SECRET, client_kwargs={"endpoint_url": s3.endpoint}
    )
    prefix = f"{s3.bucket}/{LAKE_PREFIX}/"
    return {
        key.removeprefix(prefix): fs.cat_file(key)
        for key in sorted(fs.find(prefix))
        if key.endswith(".parquet")
    }


def _single_machine_run(folder: Path, source_dsn: str) -> Path:
    """`pipeline demo` as `make demo` runs it: SQLite instance, lake on local disk."""
    home, data = folder / "home", folder / "data"
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = clean_env(
        DAGSTER_HOME=str(home), PIPELINE_DATA_ROOT=str(data), PIPELINE_DX_SOURCE_DSN=source_dsn
    )
    done = subprocess.run(
        [str(BIN / "pipeline"), "demo"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=BACKFILL_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return data


def _launch_demo_backfill(instance: dg.DagsterInstance, defs: dg.Definitions) -> str:
    """The demo's targets as one asset backfill, as the UI's "Materialize" of a range submits it."""
    selectors = []
    for keys, partition_keys in demo_targets(defs, instance):
        partitions = (
            None
            if partition_keys is None
            else PartitionsSelector(
                ranges=[PartitionRangeSelector(start=partition_keys[0], end=partition_keys[-1])]
            )
        )
        selectors += [
            PartitionsByAssetSelector(asset_key=key, partitions=partitions) for key in keys
        ]
    backfill_id = make_new_backfill_id()
    # Dynamic partitions (the GEX import jobs) resolve against the instance.
    with partition_loading_context(dynamic_partitions_store=instance):
        backfill = PartitionBackfill.from_partitions_by_assets(
            backfill_id=backfill_id,
            asset_graph=defs.resolve_asset_graph(),
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            partitions_by_assets=selectors,
            title="demo backfill on the production profile",
            description=None,
            run_config=BACKFILL_RUN_CONFIG,
        )
    instance.add_backfill(backfill)
    return backfill_id


def _failure_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """What failed in a run: each failed step or run with its error's message."""
    messages = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event and event.event_type_value in ("STEP_FAILURE", "PIPELINE_FAILURE"):
            error = getattr(event.event_specific_data, "error", None)
            while error is not None and error.cause is not None:  # the root cause says most
                error = error.cause
            detail = error.message.strip()[-600:] if error else entry.user_message[-600:]
            messages.append(f"{event.step_key or 'run'}: {detail}")
    return messages


def _wait_for_backfill(
    instance: dg.DagsterInstance, backfill_id: str, daemon: subprocess.Popen, log: Path
) -> BulkActionStatus:
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    while time.monotonic() < deadline:
        status = instance.get_backfill(backfill_id).status
        if status in FINISHED:
            return status
        assert daemon.poll() is None, f"dagster-daemon exited:\n{log.read_text()[-4000:]}"
        time.sleep(2)
    raise AssertionError(f"backfill {backfill_id} still {status} after {BACKFILL_TIMEOUT_S}s")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_production_profile_runs_the_demo_backfill_to_the_single_machine_bytes(
    scratch: Path,
    postgres_server: PostgresServer,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One operational source for both runs (the HQ export reads it; writing the demo rows twice
    # adds nothing), and the instance in a database of its own on the same server.
    source_dsn = postgres_server.url("postgres")
    instance_url = postgres_server.create_database("dagster_instance")

    home, data = scratch / "production" / "home", scratch / "production" / "data"
    home.mkdir(parents=True)
    shutil.copy(PROFILE, home / "dagster.yaml")
    env = clean_env(
        DAGSTER_HOME=str(home),
        DAGSTER_POSTGRES_URL=instance_url,
        PIPELINE_DATA_ROOT=str(data),
        PIPELINE_LAKE_ROOT=f"s3://{s3_server.bucket}/{LAKE_PREFIX}",
        PIPELINE_DX_SOURCE_DSN=source_dsn,
        **s3_server.env(),
    )
    for name in set(os.environ) - set(env):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    from pipeline_assets.definitions import defs as load_defs

    settings = Settings.from_env()
    defs = load_defs()
    log = scratch / "production" / "daemon.log"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        generate_demo_sources(settings)
        for name, keys_of in DEMO_DYNAMIC_PARTITIONS.items():
            instance.add_dynamic_partitions(name, keys_of(settings))
        # The watchers would land the demo days a second time beside the backfill; their own
        # path to the same bytes is test_new_day_flows_to_gold.py.
        assert "bronze_watcher" in stop_automation(instance)
        backfill_id = _launch_demo_backfill(instance, defs)
        with running_daemon(env, log) as daemon:
            status = _wait_for_backfill(instance, backfill_id, daemon, log)

        records = instance.get_run_records(
            dg.RunsFilter(tags={"dagster/backfill": backfill_id}), ascending=True
        )
        failures = {
            r.dagster_run.run_id: _failure_messages(instance, r.dagster_run.run_id)
            for r in records
            if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS
        }
        logs_by_run = {
            r.dagster_run.run_id: instance.all_logs(r.dagster_run.run_id) for r in records
        }
        pool_limit = instance.event_log_storage.get_concurrency_info("source_postgres").slot_count

    # The single machine, on the same sources: SQLite instance, lake on local disk.
    reference = _single_machine_run(scratch / "single", source_dsn)

    # Every Parquet file of the lake, on S3, is the single machine's file, byte for byte.
    lake = _sha256_by_path(_s3_parquet(s3_server))
    expected_lake = _sha256_by_path(_local_parquet(reference, LAKE_LAYERS))
    assert {p.split("/")[0] for p in expected_lake} == set(LAKE_LAYERS)
    assert sorted(lake) == sorted(expected_lake)
    assert lake == expected_lake
    # And the data root's own Parquet (the GEX canonical layout) too.
    gex = _sha256_by_path(_local_parquet(data, ("parquet",)))
    assert gex and gex == _sha256_by_path(_local_parquet(reference, ("parquet",)))
    # Readable by an independent reader.
    some = next(p for p in sorted(expected_lake) if p.startswith("gold/"))
    assert pq.read_table(reference / some).num_rows > 0

    for run_id, logs in logs_by_run.items():
        kinds = {e.dagster_event.event_type_value for e in logs if e.dagster_event}
        # Queued, then launched by the daemon's run coordinator ...
        assert {"PIPELINE_ENQUEUED", "PIPELINE_STARTING"} <= kinds, run_id
        # ... and its steps in the multiprocess executor.
        assert any("using multiprocess executor" in e.user_message for e in logs), run_id
    # Runs in parallel: at least two overlapped in time.
    spans = sorted((r.start_time, r.end_time) for r in records)
    assert any(
        later_start < earlier_end
        for (_, earlier_end), (later_start, _) in itertools.pairwise(spans)
    ), spans
    # The pools' slots live in the instance's PostgreSQL, at the profile's limit of one, and so
    # do the runs.
    assert pool_limit == 1
    with psycopg.connect(postgres_server.url("dagster_instance")) as conn:
        (runs_in_postgres,) = conn.execute("select count(*) from runs").fetchone()
    assert runs_in_postgres == len(records)
    # Every run of the backfill succeeded, with every check: bytes alone are not enough.
    assert status == BulkActionStatus.COMPLETED_SUCCESS and not failures, (
        f"backfill {status}; failed runs: {failures}"
    )
