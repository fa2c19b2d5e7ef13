"""Property tests of the staging export's pure logic: window and query bounds, watermarks, and
filter normalization."""

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from pipeline_assets.lib.market.staging_export import (
    Bounds,
    StagingExportError,
    export_options,
    export_window,
    format_ts,
    new_watermark,
    parse_ts,
    query_bounds,
)

moments = st.datetimes(
    min_value=dt.datetime(2001, 1, 1), max_value=dt.datetime(2090, 1, 1), timezones=st.just(dt.UTC)
)
hours = st.floats(min_value=0.001, max_value=24 * 400, allow_nan=False)


@given(hours, moments, st.one_of(st.none(), moments), st.booleans())
def test_bounds_follow_the_contract(h, end, watermark, incremental):
    start, end_ = export_window(h, end)
    assert start <= end_ == end
    try:
        bounds = query_bounds(start, end, watermark, incremental=incremental)
    except StagingExportError:
        assert incremental and watermark is not None and watermark > end
        return
    if incremental and watermark is not None:
        assert bounds == Bounds(watermark, False, end)
        assert not bounds.contains(watermark)
    else:
        assert bounds == Bounds(start, True, end)
        assert bounds.contains(start)
    assert bounds.lower_utc <= bounds.upper_utc
    # The end is in the bounds, unless the watermark is the end itself (then nothing is new).
    assert bounds.contains(end) or (bounds.lower_utc == end and not bounds.lower_inclusive)


@given(st.lists(moments, min_size=1, max_size=30), st.integers(min_value=1, max_value=29))
def test_consecutive_incremental_runs_partition_the_rows(times, cut):
    # Rows ingested at `times`; run 1 sees those up to its end, run 2 the rest: none twice or lost.
    times = sorted(times)
    cut = min(cut, len(times))
    end1, end2 = times[cut - 1], times[-1]
    start = times[0] - dt.timedelta(hours=1)
    run1 = query_bounds(start, end1, None, incremental=True)
    got1 = [t for t in times if run1.contains(t)]
    mark = new_watermark(None, max(got1))
    run2 = query_bounds(start, end2, mark, incremental=True)
    got2 = [t for t in times if run2.contains(t)]
    assert sorted(got1 + got2) == times


@given(moments)
def test_timestamp_text_round_trips_and_orders(moment):
    text = format_ts(moment)
    assert parse_ts(text) == moment and len(text) == 27
    later = moment + dt.timedelta(microseconds=1)
    assert format_ts(later) > text


@given(st.one_of(st.none(), moments), st.one_of(st.none(), moments))
def test_new_watermark_never_moves_back(previous, exported):
    new = new_watermark(previous, exported)
    for value in (previous, exported):
        assert value is None or new >= value
    assert new in (previous, exported)


codes = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    min_size=1,
    max_size=8,
).filter(lambda s: any(c.isalpha() for c in s))


@given(
    st.lists(codes, max_size=6),
    st.lists(st.text(alphabet="abcXYZ -", min_size=1, max_size=8).filter(str.strip), max_size=6),
)
def test_filters_normalize_to_canonical_forms(assets, exchanges):
    options = export_options(assets=[f"  {a} " for a in assets], exchanges=exchanges)
    assert list(options.assets) == sorted(set(options.assets))
    assert all(a == a.upper() and a.strip() == a for a in options.assets)
    expected = {("BTC" if a.upper() == "XBT" else a.upper()) for a in assets}
    assert set(options.assets) == expected
    assert set(options.exchanges) == {e.strip().lower() for e in exchanges}
    # Normalizing again changes nothing.
    again = export_options(assets=list(options.assets), exchanges=list(options.exchanges))
    assert again.assets == options.assets and again.exchanges == options.exchanges
