"""Helpers of the deployment tests: a real `dagster-daemon` over the project's workspace, and the
instance's automation switched to what a test wants running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

REPO = Path(__file__).resolve().parents[2]
WORKSPACE = REPO / "workspace.yaml"
BIN = Path(sys.executable).parent


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any pipeline, Dagster or AWS setting, plus `settings`."""
    kept = {
        k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "DAGSTER_", "AWS_"))
    }
    return {**kept, **settings}


def stop_automation(instance: dg.DagsterInstance, *, keep: Collection[str] = ()) -> list[str]:
    """Stop every sensor and schedule of the code location except those named in `keep`.

    Their state is stored in the instance, so a daemon started afterwards leaves them alone.
    Returns the names stopped.
    """
    stopped = []
    with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(WORKSPACE)])) as process:
        workspace = process.create_request_context()
        for location in workspace.code_locations:
            for repository in location.get_repositories().values():
                for sensor in repository.get_sensors():
                    if sensor.name not in keep:
                        instance.stop_sensor(
                            sensor.get_remote_origin_id(), sensor.selector_id, sensor
                        )
                        stopped.append(sensor.name)
                for schedule in repository.get_schedules():
                    if schedule.name not in keep:
                        instance.stop_schedule(
                            schedule.get_remote_origin_id(), schedule.selector_id, schedule
                        )
                        stopped.append(schedule.name)
    return stopped


@contextmanager
def running_daemon(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`dagster-daemon run` over the project's workspace; stopped, with its children, on exit."""
    with log.open("w") as log_file:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group: the daemon, its code server and the run workers it starts.
            start_new_session=True,
        )
        try:
            yield daemon
        finally:
            _stop_process_group(daemon)


def _stop_process_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
