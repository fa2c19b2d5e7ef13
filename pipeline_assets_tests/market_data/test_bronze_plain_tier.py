"""Bronze's plain tier (payloads in the collectors' plainest form, parsed with Arrow kernels):
every row it takes is landed exactly as the per-row parser lands it (property test on payloads
near the plain form), and canonical collector payloads are all taken."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_assets.lib.market.bronze import (
    CHANNELS,
    REJECTS,
    _Builder,
    _normalize_names,
    land_tick_rows,
)
from pipeline_assets.lib.market.bronze_stream import _RAW_SCHEMA, SPILL_SCHEMAS, _plain_tier

NAMES = [("Binance", "BTCUSDT"), ("KRAKEN", "btc/usdt"), ("coinbase", "X")]
TS = "2026-02-19T10:30:00.123456Z"

_plain_numbers = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"{f:.17e}"),
)
_odd_numbers = st.one_of(
    st.sampled_from(
        ["-0", "0", "-0.0", "0e0", "1e400", "-1e400", "1e-400", "5e-324", "1E+5", "0.1", "7" * 320]
    ),
    st.sampled_from(['"1.5"', "true", "null", "NaN", "[]", "01", "+1", ".5", "1."]),
)
# Mostly plain numbers, so that most rows are taken and the odd one decides.
_numbers = st.integers(0, 24).flatmap(lambda k: _odd_numbers if k == 0 else _plain_numbers)
_plain_ids = st.one_of(
    st.text("ab-_9 é€😀", max_size=6).map(lambda t: json.dumps(t, ensure_ascii=False)),
    st.text(max_size=6).map(lambda t: json.dumps(t, ensure_ascii=False)),
    st.integers(-(10**25), 10**25).map(str),
)
_odd_ids = st.sampled_from(
    ['""', "-0", "1.0", "null", "true", '"a,b"', '"a:b"', '"[x]"', "9" * 310, '"\\u00e9"']
)
_ids = st.integers(0, 7).flatmap(lambda k: _odd_ids if k == 0 else _plain_ids)
_sides = st.sampled_from(['"buy"', '"sell"', "null", '"BUY"', "1", '"buy "', None])
_spaces = st.sampled_from(["", " ", "  ", "\t", "\n"])


@st.composite
def _payload(draw: st.DrawFn, channel: str) -> str:
    sp = draw(_spaces) if draw(st.integers(0, 9)) == 0 else draw(st.sampled_from(["", " "]))
    if channel == "orderbook":

        def levels() -> str:
            level = st.lists(
                _numbers, min_size=2, max_size=3 if draw(st.integers(0, 9)) == 0 else 2
            )
            items = draw(st.lists(level, max_size=4))
            return "[" + f",{sp}".join("[" + f",{sp}".join(x) + "]" for x in items) + "]"

        fields = {"bids": levels(), "asks": levels()}
    elif channel == "trades":
        fields = {"trade_id": draw(_ids), "price": draw(_numbers), "size": draw(_numbers)}
        side = draw(_sides)
        if side is not None:
            fields["side"] = side
    else:
        fields = {k: draw(_numbers) for k in ("bid", "ask", "last", "volume_24h")}
    items = [f'"{k}":{sp}{v}' for k, v in fields.items()]
    if draw(st.integers(0, 9)) == 0 and items:
        items.pop(draw(st.integers(0, len(items) - 1)))  # a missing field
    if draw(st.integers(0, 4)) == 0:
        items.append(f'"extra":{sp}{draw(st.one_of(_numbers, _ids))}')
    if draw(st.integers(0, 9)) == 0 and items:
        items.append(items[draw(st.integers(0, len(items) - 1))])  # a repeated key
    if draw(st.integers(0, 5)) == 0:
        items = draw(st.permutations(items))
    return draw(st.sampled_from(["", " "])) + "{" + f",{sp}".join(items) + "}"


@st.composite
def _rows(draw: st.DrawFn) -> list[tuple]:
    rows = []
    for i in range(draw(st.integers(1, 15))):
        channel = draw(st.sampled_from(CHANNELS))
        exchange, symbol = draw(st.sampled_from(NAMES))
        ts = draw(
            st.sampled_from([TS] * 8 + ["2026-02-19T10:30:00Z", "0999-01-01T00:00:00.000000Z"])
        )
        rows.append((i + 1, exchange, symbol, channel, ts, TS, draw(_payload(channel))))
    return rows


def _page(rows: list[tuple]) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(_RAW_SCHEMA.names, r)) for r in rows], schema=_RAW_SCHEMA)


def _same(a: object, b: object) -> bool:
    # Values compared bit for bit: -0.0 is not 0.0.
    if isinstance(a, float) and isinstance(b, float):
        return math.copysign(1, a) == math.copysign(1, b) and (a == b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _compare(rows: list[tuple]) -> int:
    names = {pair: _normalize_names(*pair) for pair in NAMES}
    plain, taken = _plain_tier(_page(rows), names)
    builder = _Builder()
    land_tick_rows(rows, "w.db", builder, dict(names))
    exact = {
        name: {r["source_id"]: r for r in table.to_pylist()}
        for name, table in builder.tables().items()
    }
    taken_ids = {rows[i][0] for i in range(len(rows)) if taken[i]}
    got_ids: set[int] = set()
    for channel, table in plain.items():
        assert table.schema.names == [
            f.name for f in SPILL_SCHEMAS[channel] if f.name not in ("source_file", "dup_hash")
        ]
        for row in table.to_pylist():
            got_ids.add(row["source_id"])
            assert row["source_id"] not in exact[REJECTS], (row, exact[REJECTS][row["source_id"]])
            reference = exact[channel][row["source_id"]]
            assert _same(row, {k: reference[k] for k in row}), (row, reference)
    assert got_ids == taken_ids
    return len(taken_ids)


@settings(max_examples=80, deadline=None)
@given(rows=_rows())
def test_rows_taken_are_landed_as_the_exact_parser_lands_them(rows: list[tuple]) -> None:
    _compare(rows)


@pytest.mark.parametrize(
    "channel,payload",
    [
        ("orderbook", '{"bids": [[65000.1, 0.5], [64999.9, 1.2]], "asks": [[65000.2, 0.4]]}'),
        ("orderbook", '{"bids":[],"asks":[[1,2]]}'),
        ("trades", '{"trade_id": "123", "price": 65000.5, "size": 0.01, "side": "buy"}'),
        ("trades", '{"trade_id": 3000000007, "price": 65000.5, "size": 1e-3, "side": null}'),
        ("trades", '{"price": 1, "size": 2, "trade_id": "x-1"}'),
        ("ticker", '{"bid": 65000.1, "ask": 65000.2, "last": 65000.1, "volume_24h": 1234.5}'),
    ],
)
def test_canonical_collector_payloads_are_taken(channel: str, payload: str) -> None:
    assert _compare([(1, "Binance", "BTCUSDT", channel, TS, TS, payload)]) == 1


@pytest.mark.parametrize(
    "channel,payload",
    [
        ("ticker", '{"bid": -0, "ask": 1, "last": 1, "volume_24h": 1}'),
        ("ticker", '{"bid": "1.5", "ask": 1, "last": 1, "volume_24h": 1}'),
        ("ticker", '{"bid": 1, "bid": 2, "ask": 1, "last": 1, "volume_24h": 1}'),
        ("ticker", '{"bid": 1e400, "ask": 1, "last": 1, "volume_24h": 1}'),
        ("orderbook", '{"asks": [[1, 2]], "bids": []}'),
        ("orderbook", '{"bids": [[1, 2, 3]], "asks": []}'),
        ("trades", '{"trade_id": "a\\"b", "price": 1, "size": 2}'),
        ("trades", '{"trade_id": "", "price": 1, "size": 2}'),
    ],
)
def test_payloads_outside_the_plain_form_are_left_to_the_other_paths(
    channel: str, payload: str
) -> None:
    assert _compare([(1, "Binance", "BTCUSDT", channel, TS, TS, payload)]) == 0
