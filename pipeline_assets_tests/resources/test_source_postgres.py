"""SourcePostgres and lib.postgres on a real embedded server: start, reuse, retry, redaction."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import psutil
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from pipeline_assets.lib.postgres import (
    SourceUnavailableError,
    connect_with_retry,
    embedded_dsn,
    redact_dsn,
)
from pipeline_assets.resources.source_postgres import SourcePostgres

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Hunter2-sup3r/secret@pw"


# --------------------------------------------------------------------------------------------
# Embedded servers: started lazily, all stopped when the module's tests are done


def _postmasters(pgdata: Path) -> list[psutil.Process]:
    """Live postmaster processes serving `pgdata` (children carry no -D argument)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or "-D" not in cmd:
            continue
        if cmd[cmd.index("-D") + 1 :][:1] == [str(pgdata)]:
            found.append(proc)
    return found


def _stop_embedded(pgdata: Path) -> None:
    from pgserver.postgres_server import PostgresServer

    from pipeline_assets.lib.postgres import stop_embedded

    server = PostgresServer._instances.get(pgdata)
    if server is not None:
        # cleanup() stops the server only in cleanup_mode 'stop' and only when this process
        # holds the last handle listed in <pgdata>/.handle_pids.json.
        server.cleanup_mode = "stop"
        server.cleanup()
    if _postmasters(pgdata):
        # A handle left by a killed process keeps cleanup() from stopping: stop it directly.
        with contextlib.suppress(subprocess.CalledProcessError):
            stop_embedded(pgdata)
    # Not our children: once stopped they linger as zombies until init reaps them, which
    # psutil.wait_procs would count as alive, so poll for "gone or zombie" instead.
    deadline = time.monotonic() + 15
    while _postmasters(pgdata) and time.monotonic() < deadline:
        time.sleep(0.1)
    for proc in _postmasters(pgdata):
        proc.kill()


@pytest.fixture(scope="module")
def pg_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    """Registry of embedded data folders used by this module; stops their servers at the end."""
    dirs: list[Path] = []
    yield dirs
    for pgdata in dirs:
        _stop_embedded(pgdata)
    for pgdata in dirs:
        assert not _postmasters(pgdata), f"postgres still running for {pgdata}"


@pytest.fixture(scope="module")
def shared_dir(pg_dirs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    pgdata = (tmp_path_factory.mktemp("pg_shared") / "postgres").resolve()
    pg_dirs.append(pgdata)
    return pgdata


@pytest.fixture(scope="module")
def shared_uri(shared_dir: Path) -> str:
    return embedded_dsn(shared_dir)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Embedded server: start and reuse


def test_embedded_server_starts_and_is_reused_across_resources_and_processes(
    pg_dirs: list[Path],
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pgdata = (tmp_path_factory.mktemp("pg_reuse") / "postgres").resolve()
    pg_dirs.append(pgdata)
    assert not _postmasters(pgdata)

    caplog.set_level(logging.INFO, logger="pipeline_assets.lib.postgres")
    first = SourcePostgres(embedded_dir=str(pgdata))
    with first.connection() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert "started embedded PostgreSQL" in caplog.text
    (postmaster,) = _postmasters(pgdata)
    uri = first.get_dsn()

    caplog.clear()
    second = SourcePostgres(embedded_dir=str(pgdata))
    assert second.get_dsn() == uri
    with second.connection() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert "started embedded PostgreSQL" not in caplog.text

    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from pipeline_assets.lib.postgres import embedded_dsn\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "print(embedded_dsn(Path(sys.argv[1])))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(pgdata)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == uri
    assert "reusing embedded PostgreSQL" in done.stderr
    assert "started embedded PostgreSQL" not in done.stderr

    # Still the one postmaster, and it outlived the other process.
    assert [p.pid for p in _postmasters(pgdata)] == [postmaster.pid]
    with first.connection() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_processes_starting_at_once_share_one_server(
    pg_dirs: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    pgdata = (tmp_path_factory.mktemp("pg_race") / "postgres").resolve()
    pg_dirs.append(pgdata)
    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from pipeline_assets.lib.postgres import embedded_dsn\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "print(embedded_dsn(Path(sys.argv[1])))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(pgdata)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=90) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], [err for _, err in outputs]

    assert len({out.strip().splitlines()[-1] for out, _ in outputs}) == 1
    assert sum("started embedded PostgreSQL" in err for _, err in outputs) == 1
    assert len(_postmasters(pgdata)) == 1


def test_explicit_dsn_to_the_same_server(shared_uri: str, tmp_path: Path) -> None:
    params = conninfo_to_dict(shared_uri)
    dsn = (
        f"host={params['host']} port={params.get('port', 5432)} user=postgres "
        f"dbname=postgres password='{PASSWORD}'"
    )
    resource = SourcePostgres(dsn=dsn, embedded_dir=str(tmp_path / "unused"))
    assert resource.get_dsn() == dsn
    assert PASSWORD not in resource.redacted_dsn()
    with resource.connection() as conn:
        assert conn.execute("select current_user").fetchone() == ("postgres",)
    assert conn.closed
    # The explicit DSN must not have started anything in embedded_dir.
    assert not (tmp_path / "unused").exists()


def test_resource_inside_a_dagster_run(shared_uri: str, shared_dir: Path) -> None:
    @dg.asset
    def probe(source_postgres: SourcePostgres) -> int:
        with source_postgres.connection() as conn:
            return conn.execute("select 41 + 1").fetchone()[0]

    result = dg.materialize(
        [probe], resources={"source_postgres": SourcePostgres(embedded_dir=str(shared_dir))}
    )
    assert result.success
    assert result.output_for_node("probe") == 42


# --------------------------------------------------------------------------------------------
# Retries


def test_closed_port_retries_then_fails_without_the_password() -> None:
    dsn = f"postgresql://postgres:{quote(PASSWORD, safe='')}@127.0.0.1:{_free_port()}/postgres"
    retries: list[tuple[int, float, str]] = []

    with pytest.raises(SourceUnavailableError) as info:
        connect_with_retry(
            dsn,
            attempts=3,
            backoff_seconds=0.01,
            on_retry=lambda attempt, delay, error: retries.append((attempt, delay, str(error))),
        )

    assert [attempt for attempt, _, _ in retries] == [1, 2]  # 3 attempts, 2 waits between
    assert retries[1][1] > retries[0][1]
    err = info.value
    assert err.attempts == 3
    message = str(err)
    assert "after 3 attempts" in message
    assert "127.0.0.1" in message
    for text in [message, repr(err), err.dsn, err.last_error, *(e for _, _, e in retries)]:
        assert PASSWORD not in text
        assert quote(PASSWORD, safe="") not in text


class _EchoingRejector:
    """A fake server that refuses every login with a FATAL error quoting the password.

    It proves two things a closed port cannot: each attempt really reaches the network
    (accepted connections are counted) and driver error text is scrubbed before it is shown.
    """

    def __init__(self, leak: str) -> None:
        self.leak = leak
        self.accepted = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with client:
                client.settimeout(5)
                with contextlib.suppress(OSError):
                    client.recv(8192)  # the startup packet
                    fields = b"SFATAL\0C28P01\0M" + f"bad password {self.leak}".encode() + b"\0\0"
                    client.sendall(b"E" + struct.pack("!I", 4 + len(fields)) + fields)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(5)


def test_driver_error_text_is_scrubbed_and_every_attempt_connects() -> None:
    rejector = _EchoingRejector(leak=PASSWORD)
    try:
        dsn = (
            f"host=127.0.0.1 port={rejector.port} user=postgres password='{PASSWORD}' "
            "sslmode=disable gssencmode=disable"
        )
        seen: list[str] = []
        with pytest.raises(SourceUnavailableError) as info:
            connect_with_retry(
                dsn, attempts=4, backoff_seconds=0.01, on_retry=lambda a, d, e: seen.append(str(e))
            )
    finally:
        rejector.close()

    assert rejector.accepted == 4
    assert len(seen) == 3
    assert "bad password ***" in info.value.last_error  # the server's text, password masked
    for text in [str(info.value), *seen]:
        assert PASSWORD not in text


class _TcpToUnixForwarder:
    """Forwards 127.0.0.1:<port> to the embedded server's unix socket (pgserver has no TCP)."""

    def __init__(self, port: int, unix_path: str) -> None:
        self.unix_path = unix_path
        self.accepted = 0
        self._sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.2)
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.unix_path)
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for sock in self._sockets:
            sock.close()


def test_server_that_comes_up_during_retries_is_reached(shared_uri: str) -> None:
    params = conninfo_to_dict(shared_uri)
    unix_path = f"{params['host']}/.s.PGSQL.{params.get('port', 5432)}"
    port = _free_port()
    forwarders: list[_TcpToUnixForwarder] = []
    timer = threading.Timer(1.0, lambda: forwarders.append(_TcpToUnixForwarder(port, unix_path)))
    retries: list[int] = []
    dsn = f"postgresql://postgres:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/postgres"

    started = time.monotonic()
    timer.start()
    try:
        with connect_with_retry(
            dsn,
            attempts=8,
            backoff_seconds=0.25,
            max_backoff_seconds=2.0,
            on_retry=lambda attempt, delay, error: retries.append(attempt),
        ) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        timer.join()
        for forwarder in forwarders:
            forwarder.close()

    assert retries, "the first attempt, before the forwarder existed, should have failed"
    assert forwarders and forwarders[0].accepted >= 1
    assert time.monotonic() - started < 15


# --------------------------------------------------------------------------------------------
# Redaction

_HOSTS = st.from_regex(r"[a-z][a-z0-9]{2,10}(\.[a-z]{2,6})?", fullmatch=True)
_PASSWORDS = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), max_codepoint=0x2FFF
    ),
    min_size=4,
    max_size=40,
)


@given(host=_HOSTS, password=_PASSWORDS, form=st.sampled_from(["userinfo", "query", "kv"]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
def test_redact_dsn_never_shows_the_password(host: str, password: str, form: str) -> None:
    encoded = quote(password, safe="")
    kv_quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if form == "userinfo":
        dsn = f"postgresql://loader:{encoded}@{host}:5432/market?sslmode=prefer"
        without = f"postgresql://loader@{host}:5432/market?sslmode=prefer"
    elif form == "query":
        dsn = f"postgresql://loader@{host}/market?password={encoded}&connect_timeout=5"
        without = f"postgresql://loader@{host}/market?connect_timeout=5"
    else:
        dsn = f"host={host} port=5432 user=loader password={kv_quoted} dbname=market"
        without = f"host={host} port=5432 user=loader dbname=market"
    # Only passwords that could not show up by accident, e.g. as part of the host name.
    assume(password not in without and encoded not in without)

    redacted = redact_dsn(dsn)
    assert password not in redacted
    assert encoded not in redacted
    assert host in redacted
    assert redacted == without
