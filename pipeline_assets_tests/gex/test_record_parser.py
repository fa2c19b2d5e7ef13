"""The record parser and validator: the live probe's real field lists are accepted and kept, and
property tests (hypothesis) for valid and broken records."""

import json

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_assets.lib.gex.records import GexRecordError, missing_fields, parse_records
from pipeline_assets_tests.gex.conftest import FIXTURES, snapshot

PROBE = json.loads((FIXTURES / "gexbot_live_probe_fields_2026-08-09.json").read_text())
# Values for a field by name: what the classic endpoints send (pairs for maxchange windows).
PAIRS = {"current", "one", "five", "ten", "fifteen", "thirty"}


def _value(field: str):
    if field == "timestamp":
        return 1771511400
    if field == "ticker":
        return "SPX"
    if field == "strikes":
        return [[6000.0, 1.0, 2.0, [0.5]]]
    if field == "max_priors":
        return [[6000.0, 1.0]]
    if field in PAIRS:
        return [6000.0, 3.5]
    if field in ("min_dte", "sec_min_dte"):
        return 0
    return 1.25


@pytest.mark.parametrize(
    "operation",
    [p["operation"] for p in PROBE["probes"] if p["operation"].startswith("GET /v2/SPX/")],
)
def test_every_field_the_live_api_returns_is_accepted_and_kept(operation):
    probe = next(p for p in PROBE["probes"] if p["operation"] == operation)
    record = {f: _value(f) for f in probe["fields"]}
    endpoint = operation.rsplit("/", 1)[-1]
    parsed = parse_records(json.dumps([record]).encode(), job_id=1, endpoint=endpoint, name="probe")
    assert parsed.source_fields == set(probe["fields"])
    assert missing_fields(parsed.source_fields, parsed.table) == []


def test_orderflow_fields_land_in_extra_fields_not_dropped():
    probe = next(p for p in PROBE["probes"] if p["operation"].endswith("orderflow/orderflow"))
    record = {f: _value(f) for f in probe["fields"]}
    table = parse_records(
        json.dumps(record).encode(), job_id=1, endpoint="orderflow", name="of"
    ).table
    extra = json.loads(table["extra_fields"][0].as_py())
    assert set(extra) == set(probe["fields"]) - {"spot", "ticker", "timestamp"}
    assert table.num_rows == 1 and table["strike_index"][0].as_py() == -1


finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
maybe = st.one_of(st.none(), finite)
strike_items = st.lists(
    st.tuples(finite, maybe, maybe, st.one_of(st.none(), st.lists(maybe, max_size=4))).map(
        lambda t: [t[0], t[1], t[2]] if t[3] is None else list(t)
    ),
    max_size=6,
)
records = st.builds(
    lambda ts, spot, strikes, extra: {
        "timestamp": ts,
        "ticker": "SPX",
        "spot": spot,
        "strikes": strikes,
        "min_dte": 0,
        **extra,
    },
    st.integers(min_value=1, max_value=4_000_000_000),
    st.floats(min_value=0.01, max_value=1e6),
    strike_items,
    st.dictionaries(
        st.text("abcxyz_", min_size=1, max_size=8).filter(
            lambda k: k not in {"spot", "ticker", "timestamp", "strikes", "min_dte"}
        ),
        st.integers(),
        max_size=2,
    ),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(records, min_size=1, max_size=5))
def test_valid_records_give_one_row_per_strike_with_every_value(recs):
    parsed = parse_records(json.dumps(recs).encode(), job_id=7, endpoint="gex_zero", name="f")
    table = parsed.table
    # Independent expectation: one row per strike, one row for a snapshot without strikes.
    assert table.num_rows == sum(max(1, len(r["strikes"])) for r in recs)
    rows = table.to_pylist()
    i = 0
    for n, rec in enumerate(recs):
        for j, item in enumerate(rec["strikes"] or [None]):
            row = rows[i]
            assert (row["record_index"], row["timestamp"], row["spot"]) == (
                n,
                rec["timestamp"],
                rec["spot"],
            )
            if item is not None:
                assert row["strike_index"] == j
                assert [row["strike"], row["gex_vol"], row["gex_oi"]] == item[:3]
                assert row["priors"] == (item[3] if len(item) == 4 else None)
            extra = {
                k: v
                for k, v in rec.items()
                if k not in {"spot", "ticker", "timestamp", "strikes", "min_dte"}
            }
            assert (json.loads(row["extra_fields"]) if row["extra_fields"] else {}) == extra
            i += 1
    assert missing_fields(parsed.source_fields, table) == []
    assert table.schema.field("snapshot_ts_utc").type == pa.timestamp("us", tz="UTC")


BREAKAGES = {
    "missing spot": (lambda r: r.pop("spot"), "required field 'spot' is missing"),
    "null timestamp": (lambda r: r.update(timestamp=None), "required field 'timestamp' is null"),
    "text spot": (lambda r: r.update(spot="6050"), "field 'spot': expected a finite number"),
    "millisecond timestamp": (lambda r: r.update(timestamp=1771511400000), "milliseconds"),
    "bool dte": (lambda r: r.update(min_dte=True), "field 'min_dte': expected a whole number"),
    "short strike": (lambda r: r["strikes"].append([6000.0, 1.0]), r"field 'strikes\[3\]'"),
    "text strike": (
        lambda r: r["strikes"].append(["6000", 1.0, 2.0]),
        r"field 'strikes\[3\]\[0\]'",
    ),
    "bad priors": (lambda r: r["strikes"].append([6000.0, 1.0, 2.0, ["x"]]), r"strikes\[3\]\[3\]"),
    "text gex_vol": (lambda r: r["strikes"].append([6000.0, "1.0", 2.0]), r"strikes\[3\]\[1:3\]"),
    "bad max_priors": (lambda r: r.update(max_priors=[[1.0, 2.0, 3.0]]), "field 'max_priors'"),
}


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=4), st.sampled_from(sorted(BREAKAGES)))
def test_a_broken_record_is_refused_naming_the_record_and_field(position, breakage):
    recs = [snapshot(ts=1771511400 + 60 * i) for i in range(5)]
    mutate, message = BREAKAGES[breakage]
    mutate(recs[position])
    with pytest.raises(GexRecordError, match=rf"f\.json: record {position}.*{message}"):
        parse_records(json.dumps(recs).encode(), job_id=1, endpoint="gex_zero", name="f.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"[]", "an empty list"),
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "an HTML/XML page"),
        (b'[{"timestamp": 1, ', "malformed JSON at line 1"),
        (b'{"timestamp": NaN}', "malformed JSON"),
        (b'[{"timestamp": 1771511400, "spot": 1e999}]', "malformed JSON"),
        (b'"text"', "the top level is str"),
        (b"[1, 2]", "record 0: expected a JSON object"),
    ],
)
def test_files_that_are_not_gex_json_are_refused_clearly(content, message):
    with pytest.raises(GexRecordError, match=message):
        parse_records(content, job_id=1, endpoint="gex_zero", name="f.json")


def test_maxchange_records_need_no_spot():
    rec = {"timestamp": 1771511400, "ticker": "SPX", "current": [6000.0, 1.0], "one": None}
    table = parse_records(
        json.dumps(rec).encode(), job_id=1, endpoint="gex_zero_maxchange", name="m"
    ).table
    assert table["current"][0].as_py() == [6000.0, 1.0] and table["spot"][0].as_py() is None
