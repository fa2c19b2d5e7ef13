"""The seeded crash campaign: a real run in a real process, killed with SIGKILL at a random moment,
then inspected, rerun and compared with a clean run.

Each `CrashScenario` names one write path. Its `work` runs in a child process forked from a
`forkserver` that has already imported the project (so a run starts in milliseconds and the kill
lands inside the work, not inside Python's imports). The moment of the kill is drawn from a seeded
generator over the duration of an uninterrupted run of the same work, measured first. After the
kill the scenario inspects what the killed run left (partial canonical files, watermarks ahead of
the data), reruns the work in this process and compares the result with its clean reference
(rows lost, rows duplicated, reruns that differ). The figures add up in a `CrashTally`.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# Modules the fork server imports once, so that every killed run starts from a warm interpreter.
PRELOAD = [
    "dagster",
    "duckdb",
    "psycopg",
    "pyarrow.parquet",
    "pipeline_assets.lib.market.staging_export",
    "pipeline_assets.lib.gex.imports",
    "pipeline_assets.defs.market_data.bronze",
    "pipeline_assets.defs.market_data.silver",
    "pipeline_assets.defs.market_data.gold",
    "pipeline_assets.defs.hq_export.assets",
    "pipeline_assets.resources.lake_io_manager",
    "pipeline_assets_tests.faults.crash_scenarios",
]


@dataclass
class Inspection:
    """What one look at the files found; every figure must be 0."""

    partial_files: int = 0
    watermarks_ahead: int = 0
    rows_lost: int = 0
    rows_duplicated: int = 0
    rerun_differs: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, other: Inspection) -> None:
        self.partial_files += other.partial_files
        self.watermarks_ahead += other.watermarks_ahead
        self.rows_lost += other.rows_lost
        self.rows_duplicated += other.rows_duplicated
        self.rerun_differs += other.rerun_differs
        self.problems.extend(other.problems)


@dataclass
class CrashTally:
    """The figures of one fault over a campaign."""

    fault: str
    runs_tried: int = 0
    crashes: int = 0  # kills that landed on a live run
    finished_before_kill: int = 0
    recovered: int = 0  # reruns that completed with every figure at 0
    found: Inspection = field(default_factory=Inspection)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        f = self.found
        return (
            self.crashes > 0
            and f.partial_files == f.watermarks_ahead == f.rows_lost == 0
            and f.rows_duplicated == f.rerun_differs == 0
            and self.recovered == self.runs_tried
        )

    def row(self) -> dict[str, Any]:
        f = self.found
        return {
            "fault": self.fault,
            "runs tried": self.runs_tried,
            "crashes": self.crashes,
            "data lost": f.rows_lost,
            "duplicates": f.rows_duplicated,
            "partial files": f.partial_files,
            "watermarks ahead": f.watermarks_ahead,
            "reruns differing": f.rerun_differs,
            "recovery": f"{self.recovered}/{self.runs_tried} reruns complete and equal a clean run",
        }


class CrashScenario(Protocol):
    """One write path under SIGKILL. `work` must be a module-level function (it is pickled)."""

    fault: str

    def setup(self, base: Path) -> Path:
        """Sources and the clean reference under `base`; returns the folder the runs work in."""

    def work_args(self, workdir: Path, attempt: int) -> tuple[Any, ...]:
        """Arguments of `work` for attempt `attempt` (the source may grow between attempts)."""

    def work(self, *args: Any) -> None: ...

    def before_attempt(self, workdir: Path, attempt: int, rng: random.Random) -> None:
        """Prepare the attempt (a fresh first write, a rewrite, new source rows)."""

    def after_kill(self, workdir: Path) -> Inspection:
        """What the killed run left: partial canonical files, watermarks ahead of data."""

    def rerun(self, workdir: Path, attempt: int) -> None:
        """The same work again, to completion, in this process."""

    def after_rerun(self, workdir: Path, attempt: int) -> Inspection:
        """The rerun against the clean reference: rows lost, duplicated, differing output."""


def _context() -> multiprocessing.context.ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _noop() -> None:
    return None


def _timed_run(ctx: Any, target: Callable[..., None], args: tuple[Any, ...]) -> float:
    start = time.monotonic()
    proc = ctx.Process(target=target, args=args, daemon=True)
    proc.start()
    proc.join(600)
    if proc.exitcode != 0:
        raise AssertionError(f"an uninterrupted run of {target.__name__} failed ({proc.exitcode})")
    return time.monotonic() - start


def run_campaign(
    scenario: CrashScenario,
    base: Path,
    *,
    crashes: int,
    seed: int,
    log: Callable[[str], None] = lambda message: None,
) -> CrashTally:
    """Kill `crashes` runs of the scenario at seeded random moments, each followed by a rerun."""
    ctx = _context()
    rng = random.Random(seed)
    tally = CrashTally(scenario.fault)
    started = time.monotonic()
    workdir = scenario.setup(base)
    try:
        _campaign(ctx, scenario, workdir, tally, rng, crashes, log)
    finally:
        teardown = getattr(scenario, "teardown", None)
        if teardown is not None:
            teardown()
    tally.seconds = time.monotonic() - started
    return tally


def _campaign(
    ctx: Any,
    scenario: CrashScenario,
    workdir: Path,
    tally: CrashTally,
    rng: random.Random,
    crashes: int,
    log: Callable[[str], None],
) -> None:
    # Start the fork server (and its imports) before anything is timed.
    _timed_run(ctx, _noop, ())
    # The duration of an uninterrupted run, in a child like the killed ones: the kills are drawn
    # over it. (A calibration run also proves the work completes when nothing interferes.)
    scenario.before_attempt(workdir, 0, rng)
    duration = _timed_run(ctx, scenario.work, scenario.work_args(workdir, 0))
    scenario.rerun(workdir, 0)
    attempt = 0
    while tally.crashes < crashes:
        attempt += 1
        if tally.runs_tried >= crashes * 4:
            raise AssertionError(
                f"{scenario.fault}: only {tally.crashes} of {tally.runs_tried} kills landed on a live run"
            )
        scenario.before_attempt(workdir, attempt, rng)
        delay = rng.uniform(0.0, duration)
        proc = ctx.Process(target=scenario.work, args=scenario.work_args(workdir, attempt))
        proc.daemon = True
        proc.start()
        time.sleep(delay)
        tally.runs_tried += 1
        if proc.is_alive():
            proc.kill()  # SIGKILL
            tally.crashes += 1
        else:
            tally.finished_before_kill += 1
            # Runs got faster than the calibration run (warm caches, a quieter machine): draw
            # the next kills over a shorter span, so that they keep landing inside the work.
            duration = max(0.05, duration * 0.85)
        proc.join(60)
        found = scenario.after_kill(workdir)
        try:
            scenario.rerun(workdir, attempt)
        except Exception as exc:  # noqa: BLE001 - a failed rerun is a figure, not the end
            found.rerun_differs += 1
            found.problems.append(f"attempt {attempt}: the rerun failed: {exc!r}")
        else:
            found.add(scenario.after_rerun(workdir, attempt))
        bad = (
            found.partial_files
            + found.watermarks_ahead
            + found.rows_lost
            + found.rows_duplicated
            + found.rerun_differs
        )
        if bad == 0:
            tally.recovered += 1
        else:
            log(f"{scenario.fault} attempt {attempt} (kill at {delay:.3f}s): {found.problems[:3]}")
        tally.found.add(found)
    log(
        f"{scenario.fault}: {tally.crashes} crashes in {tally.runs_tried} runs "
        f"({duration:.2f}s per clean run)"
    )
