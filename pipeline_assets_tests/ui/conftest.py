"""The Dagster UI as a user opens it: a demo-filled instance served by `dagster-webserver` and
`dagster-daemon` on loopback, its GraphQL API, and headless Chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline_assets.lib.postgres import stop_embedded
from pipeline_assets.lib.settings import SOURCE_POSTGRES_DIR

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Screenshots land here (gitignored); CI keeps the folder as the test's artifacts.
ARTIFACTS = Path(os.environ.get("PIPELINE_UI_ARTIFACTS", REPO / "test-artifacts" / "ui"))
REPOSITORY_SELECTOR = {
    "repositoryName": "__repository__",
    "repositoryLocationName": "pipeline_assets",
}
# Chromium on a closed network: no first-run, sync, component or background fetches, which the
# sandbox refuses and which would slow every page; no setuid sandbox, as root in a container.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT_S = 300


def chromium_path() -> str | None:
    """The Chromium the test drives: $PIPELINE_CHROMIUM, else Debian's, else one on PATH."""
    for candidate in (
        os.environ.get("PIPELINE_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        shutil.which("google-chrome"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class GraphQLError(AssertionError):
    pass


@dataclass
class DagsterUI:
    """A running webserver and daemon over a demo-filled instance."""

    url: str
    home: Path
    data: Path

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            body = json.loads(response.read())
        if body.get("errors"):
            raise GraphQLError(json.dumps(body["errors"])[:3000])
        return body["data"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # Its own session, so that teardown ends the process and the code servers it spawned.
    return subprocess.Popen(
        args,
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _wait_for_code_location(ui: DagsterUI, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{_tail(log)}")
        try:
            data = ui.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { name "
                "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
            )
            entries = data["workspaceOrError"]["locationEntries"]
            loaded = [e for e in entries if e["name"] == "pipeline_assets"]
            if loaded and loaded[0]["locationOrLoadError"]:
                outcome = loaded[0]["locationOrLoadError"]
                if outcome["__typename"] == "PythonError":
                    pytest.fail(f"the code location failed to load: {outcome['message']}")
                return
            last = json.dumps(entries)
        except (urllib.error.URLError, ConnectionError, TimeoutError, GraphQLError) as exc:
            last = repr(exc)
        time.sleep(1)
    pytest.fail(f"the webserver did not load the code location in time ({last}):\n{_tail(log)}")


def _stop_sensors_and_schedules(ui: DagsterUI) -> list[str]:
    """Stop every running sensor and schedule, so that the only runs are those the tests launch
    (the demo's data would otherwise set the watchers off on a few hundred runs)."""
    data = ui.graphql(
        "query($s: RepositorySelector!) {"
        " sensorsOrError(repositorySelector: $s) { ... on Sensors { results { name sensorState { id status } } } }"
        " schedulesOrError(repositorySelector: $s) { ... on Schedules { results { name scheduleState { id status } } } } }",
        {"s": REPOSITORY_SELECTOR},
    )
    stopped = []
    for sensor in data["sensorsOrError"]["results"]:
        if sensor["sensorState"]["status"] == "RUNNING":
            ui.graphql(
                "mutation($id: String) { stopSensor(id: $id) { __typename } }",
                {"id": sensor["sensorState"]["id"]},
            )
            stopped.append(sensor["name"])
    for schedule in data["schedulesOrError"]["results"]:
        if schedule["scheduleState"]["status"] == "RUNNING":
            ui.graphql(
                "mutation($id: String) { stopRunningSchedule(id: $id) { __typename } }",
                {"id": schedule["scheduleState"]["id"]},
            )
            stopped.append(schedule["name"])
    return stopped


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip(
            "no Chromium to drive: `make setup` installs Debian's `chromium` as root where apt-get "
            "exists; elsewhere install it, or point PIPELINE_CHROMIUM at a Chromium binary"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the `playwright` package is missing: `pip install -e '.[dev]'` installs it")
    return path


@pytest.fixture(scope="module")
def dagster_ui(chromium: str) -> Iterator[DagsterUI]:
    """`pipeline demo` into a fresh DAGSTER_HOME and data root, then the webserver and daemon."""
    # Not under pytest's tmp_path: the embedded PostgreSQL runs as user `pgserver`, which cannot
    # enter /tmp/pytest-of-root (mode 0700).
    root = Path(tempfile.mkdtemp(prefix="pipeline-ui-"))
    os.chmod(root, 0o755)
    home, data = root / "home", root / "data"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PIPELINE_DATA_ROOT": str(data),
        "PYTHONUNBUFFERED": "1",
    }
    procs: list[subprocess.Popen] = []
    try:
        demo = subprocess.run(
            [str(BIN / "pipeline"), "demo"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]

        port = _free_port()
        ui = DagsterUI(url=f"http://127.0.0.1:{port}", home=home, data=data)
        web_log = root / "webserver.log"
        web = _start(
            [
                str(BIN / "dagster-webserver"),
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            env,
            web_log,
        )
        procs.append(web)
        _wait_for_code_location(ui, web, web_log)
        # The first-visit newsletter dialog would cover every page.
        ui.graphql("mutation { setNuxSeen }")
        _stop_sensors_and_schedules(ui)
        # The daemon runs the backfills and dequeues runs (dagster.yaml's queued coordinator).
        procs.append(
            _start(
                [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                env,
                root / "daemon.log",
            )
        )
        yield ui
    finally:
        for proc in reversed(procs):
            _stop(proc)
        # The demo leaves its embedded PostgreSQL running, as a user wants; a test must not.
        with contextlib.suppress(subprocess.CalledProcessError):
            stop_embedded(data / SOURCE_POSTGRES_DIR)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="pipeline-ui-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


_SESSION_STARTED = time.time()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    # Named at the end of every run that saved screenshots, past pytest's output capture.
    shots = (
        sorted(p for p in ARTIFACTS.glob("*.png") if p.stat().st_mtime >= _SESSION_STARTED)
        if ARTIFACTS.is_dir()
        else []
    )
    if shots:
        terminalreporter.write_sep("-", f"UI screenshots in {ARTIFACTS}")
        for shot in shots:
            terminalreporter.write_line(str(shot))
