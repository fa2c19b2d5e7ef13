"""Recomputing a day whose end-of-day state changes is refused while a later day computed from the
old state exists (it would silently go stale); an unchanged state, or a run that recomputes the
later days too, is accepted. Checkpoints are real Parquet files with their sidecars."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from upath import UPath

from pipeline_assets.lib.custody import MetadataFactory
from pipeline_assets.lib.market.feature_days import (
    StaleLaterDaysError,
    checkpoint_hashes,
    checkpoint_path,
    checkpoint_sha256,
    refuse_stale_later_days,
    stale_later_days,
    write_checkpoint,
)
from pipeline_assets.lib.market.features import FeatureParams, FeatureState, compute_symbol_day
from pipeline_assets_tests.market_data.feature_reference import (
    Book,
    Trade,
    bronze_books,
    bronze_ticks,
    bronze_trades,
)

S = 1_000_000
DAY1, DAY2, DAY3 = (dt.date(2026, 2, 17) + dt.timedelta(days=i) for i in range(3))
PARAMS = FeatureParams()


def _state(day: dt.date, mid: float) -> FeatureState:
    """The end-of-day state of one stream after a snapshot and a trade at `mid`."""
    t0 = int(dt.datetime.combine(day, dt.time(12), dt.UTC).timestamp()) * S
    state: FeatureState = {}
    compute_symbol_day(
        bronze_books([Book(t0, [(mid - 0.5, 1.0)], [(mid + 0.5, 2.0)])]),
        bronze_trades([Trade(t0 + S, mid, 0.25, "buy", trade_id="t1")], first_id=100),
        bronze_ticks([]),
        {},
        state,
        PARAMS,
    )
    return state


@pytest.fixture
def lake(tmp_path: Path) -> UPath:
    """A lake whose three days were computed in order, each from the previous checkpoint."""
    base = UPath(tmp_path)
    factory = MetadataFactory(base, code_version="test")
    source = tmp_path / "bronze" / "source.parquet"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"bronze stand-in")
    parents = [factory.file_parent(UPath(source))]
    for day, mid in ((DAY1, 100.0), (DAY2, 101.0), (DAY3, 102.0)):
        write_checkpoint(
            base, day, _state(day, mid), PARAMS, factory=factory, parents=parents, run_id="r"
        )
        parents = [factory.file_parent(checkpoint_path(base, day))]
    return base


def test_the_scratch_hash_equals_the_written_checkpoint(lake: UPath, tmp_path: Path) -> None:
    written = checkpoint_path(lake, DAY1).read_bytes()
    assert checkpoint_sha256(_state(DAY1, 100.0), tmp_path / "scratch.parquet") == (
        hashlib.sha256(written).hexdigest()
    )


def test_an_unchanged_state_leaves_the_later_days_valid(lake: UPath, tmp_path: Path) -> None:
    sha = checkpoint_sha256(_state(DAY1, 100.0), tmp_path / "s.parquet")
    assert stale_later_days(lake, DAY1, sha) == []
    refuse_stale_later_days(lake, checkpoint_hashes({DAY1: _state(DAY1, 100.0)}, tmp_path))


def test_a_changed_state_names_every_later_computed_day(lake: UPath, tmp_path: Path) -> None:
    sha = checkpoint_sha256(_state(DAY1, 99.0), tmp_path / "s.parquet")
    assert stale_later_days(lake, DAY1, sha) == [DAY2, DAY3]
    with pytest.raises(StaleLaterDaysError) as caught:
        refuse_stale_later_days(lake, checkpoint_hashes({DAY1: _state(DAY1, 99.0)}, tmp_path))
    message = str(caught.value)
    assert f"recomputing {DAY1}" in message
    assert f"{DAY2} to {DAY3}" in message
    assert f"materialize {DAY1} to {DAY3} in one range run" in message


def test_the_last_computed_day_has_no_later_day_to_break(lake: UPath, tmp_path: Path) -> None:
    refuse_stale_later_days(lake, checkpoint_hashes({DAY3: _state(DAY3, 50.0)}, tmp_path))


def test_a_run_that_recomputes_the_later_days_too_is_accepted(lake: UPath, tmp_path: Path) -> None:
    states = {DAY1: _state(DAY1, 99.0), DAY2: _state(DAY2, 98.0), DAY3: _state(DAY3, 97.0)}
    refuse_stale_later_days(lake, checkpoint_hashes(states, tmp_path))


def test_a_run_ending_before_a_day_it_changes_is_refused(lake: UPath, tmp_path: Path) -> None:
    # Days 1 and 2 recomputed, day 2 now ends differently: day 3 would be stale.
    with pytest.raises(StaleLaterDaysError, match=f"materialize {DAY1} to {DAY3}"):
        refuse_stale_later_days(
            lake, checkpoint_hashes({DAY1: _state(DAY1, 99.0), DAY2: _state(DAY2, 98.0)}, tmp_path)
        )


def test_a_later_day_that_started_cold_is_stale_once_its_previous_day_has_a_state(
    tmp_path: Path,
) -> None:
    base = UPath(tmp_path / "lake")
    factory = MetadataFactory(base, code_version="test")
    source = tmp_path / "lake" / "bronze" / "source.parquet"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"bronze stand-in")
    # Day 2 was computed while day 1 had no bronze: a cold start, no checkpoint parent.
    write_checkpoint(
        base,
        DAY2,
        _state(DAY2, 101.0),
        PARAMS,
        factory=factory,
        parents=[factory.file_parent(UPath(source))],
        run_id="r",
    )
    sha = checkpoint_sha256(_state(DAY1, 100.0), tmp_path / "s.parquet")
    assert stale_later_days(base, DAY1, sha) == [DAY2]
