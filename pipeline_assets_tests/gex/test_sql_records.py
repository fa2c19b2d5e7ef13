"""The SQL path of the import (DuckDB's JSON reader and SQL rules) against the Python parser:
property tests (hypothesis) that whatever the SQL path accepts, the Python parser accepts too and
builds the same rows, bit for bit; that it accepts ordinary files; and which files it leaves to
the Python parser."""

import json
import math
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_assets.lib.gex.records import (
    FLOAT_FIELDS,
    INT_FIELDS,
    PAIR_FIELDS,
    GexRecordError,
    parse_records,
)
from pipeline_assets.lib.gex.sql_records import (
    StagingTables,
    sql_path_refusal,
    stage_parsed,
    stage_with_sql,
    table_rows,
)
from pipeline_assets_tests.gex.conftest import snapshot


def sql_rows(tmp: Path, data: bytes, endpoint: str = "gex_zero") -> pa.Table | None:
    """The SQL path's rows for these file bytes, or None when it leaves them to Python."""
    if sql_path_refusal(data) is not None:
        return None
    path = tmp / "staged.json"
    path.write_bytes(data)
    con = duckdb.connect()
    try:
        single = data.lstrip()[:1] == b"{"
        records = stage_with_sql(
            con, path, tables=TABLES, job_id=7, endpoint=endpoint, single_object=single
        )
        return None if records is None else table_rows(con, TABLES)
    finally:
        con.close()


def python_rows(data: bytes, endpoint: str = "gex_zero") -> pa.Table | None:
    try:
        return parse_records(data, job_id=7, endpoint=endpoint, name="f").table
    except GexRecordError:
        return None


def staged_python_rows(rows: pa.Table) -> pa.Table:
    """The Python parser's rows after the import's round trip through the staging tables."""
    con = duckdb.connect()
    try:
        stage_parsed(con, rows, tables=TABLES)
        return table_rows(con, TABLES)
    finally:
        con.close()


TABLES = StagingTables("staging_strikes", "staging_snapshots")


def _exact(value):
    # Compare floats by their bits: -0.0 is not 0.0 here.
    if isinstance(value, float):
        return value.hex() if not math.isnan(value) else "nan"
    if isinstance(value, list):
        return [_exact(v) for v in value]
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    return value


def assert_same_rows(sql: pa.Table, python: pa.Table) -> None:
    assert sql.schema.equals(python.schema, check_metadata=True)
    assert _exact(sql.to_pylist()) == _exact(python.to_pylist())


# Values for known fields: mostly what gexbot sends, sometimes what it must not.
numbers = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([0.0, -0.0, 1e-7, 2.5e-5, 1e20, 2**53, 2**53 + 1, -(2**63), 2**64, 1e300]),
)
wrong = st.one_of(
    st.text(max_size=3), st.booleans(), st.sampled_from([[], {}, [1], {"a": 1}, float("nan")])
)
number_or_null = st.one_of(st.none(), numbers)


def rarely(broken, usual):
    """`usual`, and one time in twenty `broken`: most files are valid, some break a rule."""
    return st.integers(0, 19).flatmap(lambda k: broken if k == 0 else usual)


value = rarely(wrong, number_or_null)
pair = rarely(wrong, st.one_of(st.none(), st.lists(number_or_null, min_size=2, max_size=2)))
strike_item = rarely(
    st.lists(value, max_size=5),
    st.one_of(
        st.tuples(numbers, number_or_null, number_or_null).map(list),
        st.tuples(
            numbers,
            number_or_null,
            number_or_null,
            st.one_of(st.none(), st.lists(number_or_null, max_size=4)),
        ).map(list),
    ),
)
known = st.fixed_dictionaries(
    {},
    optional={
        **{f: value for f in FLOAT_FIELDS},
        **{
            f: rarely(value, st.one_of(st.none(), st.integers(-5, 400), st.just(3.0)))
            for f in INT_FIELDS
        },
        **{f: pair for f in PAIR_FIELDS},
        "max_priors": rarely(wrong, st.one_of(st.none(), st.lists(pair, max_size=3))),
        "strikes": rarely(wrong, st.one_of(st.none(), st.lists(strike_item, max_size=4))),
    },
)
records = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries(
        {
            "timestamp": rarely(
                st.sampled_from([0, -1, 1771511400000, None, "1771511400", True]),
                st.one_of(st.integers(1, 4_000_000_000), st.floats(1.0, 4e9)),
            ),
            "ticker": rarely(
                st.one_of(st.text(max_size=4), value), st.sampled_from(["SPX", "NQ_NDX"])
            ),
            "spot": rarely(value, st.floats(0.01, 1e6)),
        }
    ),
    known,
)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(records, min_size=1, max_size=4), st.booleans())
def test_what_the_sql_path_accepts_the_python_parser_builds_identically(tmp_path, recs, single):
    document = recs[0] if single else recs
    data = json.dumps(document).encode()
    sql = sql_rows(tmp_path, data)
    python = python_rows(data)
    if sql is not None:
        assert python is not None, "the SQL path accepted a file the Python parser refuses"
        assert_same_rows(sql, python)
    if python is not None:  # what the import stages from the Python parser comes back unchanged
        assert_same_rows(staged_python_rows(python), python)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.builds(
            lambda ts, n, priors: {
                **snapshot(ts=ts),
                "strikes": [[6000.0 + 5 * i, 1.5 * i, None, priors] for i in range(n)],
            },
            st.integers(1_700_000_000, 1_800_000_000),
            st.integers(0, 5),
            st.one_of(st.none(), st.lists(st.floats(-1e6, 1e6), max_size=3)),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_ordinary_gexbot_files_take_the_sql_path(tmp_path, recs):
    data = json.dumps(recs, indent=1).encode()  # pretty-printed, as some clients save it
    sql = sql_rows(tmp_path, data)
    assert sql is not None
    assert_same_rows(sql, python_rows(data))


@pytest.mark.parametrize(
    ("endpoint", "document"),
    [
        ("gex_zero", snapshot()),
        ("gex_zero", [snapshot(strikes=0), snapshot(ts=1771511460, strikes=2)]),
        ("gex_zero", [snapshot(strikes=1, max_priors=[])]),
        (
            "gex_zero_majors",
            [
                {
                    "timestamp": 1771511400,
                    "ticker": "SPX",
                    "spot": 6050.0,
                    "mpos_vol": 6100,
                    "net_gex_oi": -1.5e9,
                }
            ],
        ),
        (
            "gex_zero_maxchange",
            [
                {
                    "timestamp": 1771511400.25,
                    "ticker": "SPX",
                    "current": [6000, -2.5],
                    "one": None,
                    "thirty": [6005.0, None],
                }
            ],
        ),
    ],
)
def test_each_endpoint_shape_takes_the_sql_path_with_the_same_rows(tmp_path, endpoint, document):
    data = json.dumps(document).encode()
    sql = sql_rows(tmp_path, data, endpoint)
    assert sql is not None
    assert_same_rows(sql, python_rows(data, endpoint))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (json.dumps([snapshot(orderflow_delta=1.5)]).encode(), "fields the contract does not name"),
        (json.dumps([snapshot(ticker="S\u00e9X")]).encode(), "escapes"),
        (json.dumps([snapshot()], ensure_ascii=False).encode("latin-1", "replace"), None),
        (b"\xef\xbb\xbf" + json.dumps([snapshot()]).encode(), "does not start"),
        (b'"text"', "does not start"),
        (b"[" + b"\xff" + b"]", "not UTF-8"),
    ],
)
def test_files_the_sql_path_leaves_to_the_python_parser(data, reason):
    refusal = sql_path_refusal(data)
    assert (refusal is None) if reason is None else (reason in refusal)


@pytest.mark.parametrize(
    "document",
    [
        [snapshot(), None],
        [snapshot(strikes=2) | {"strikes": [[6000.0, 1.0, 2.0], "6005"]}],
        [snapshot(spot=2**53 + 1)],
        [snapshot(min_dte=1.5)],
        [snapshot(max_priors=[[1.0, 2.0], None])],
    ],
)
def test_broken_records_fall_to_the_python_parser(tmp_path, document):
    data = json.dumps(document).encode()
    assert sql_rows(tmp_path, data) is None


def test_duplicate_keys_fall_to_the_python_parser_which_keeps_the_last(tmp_path):
    data = b'[{"timestamp": 1771511400, "ticker": "SPX", "spot": 1.0, "spot": 2.0}]'
    assert sql_rows(tmp_path, data) is None
    assert python_rows(data)["spot"].to_pylist() == [2.0]
