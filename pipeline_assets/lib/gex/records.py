"""Parse and validate a staged gexbot file into the rows of the `gex_strikes` contract.

A staged file holds one record (a JSON object) or a list of them. Every known field is checked
for its type; `timestamp` and `ticker` are required everywhere, `spot` too except on `maxchange`
endpoints (whose records carry no spot). Each strike `[strike, gex_vol, gex_oi, [priors...]]`
becomes a row carrying its snapshot's fields (`max_priors`, a list, on the snapshot's first row
only); a snapshot without strikes is one row. Fields the
contract does not name are kept as JSON in `extra_fields`. An error names the record, the field,
what was expected and what was found; nothing is ever dropped silently.
"""

from __future__ import annotations

import bz2
import gzip
import io
import itertools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from contracts.core import arrow_schema
from contracts.gex import GexStrikeRow

SCHEMA: pa.Schema = arrow_schema(GexStrikeRow)

# Known top-level fields of a snapshot, by kind (the live probe's field lists).
FLOAT_FIELDS: tuple[str, ...] = (
    "spot",
    "zero_gamma",
    "major_pos_vol",
    "major_pos_oi",
    "major_neg_vol",
    "major_neg_oi",
    "sum_gex_vol",
    "sum_gex_oi",
    "delta_risk_reversal",
    "mpos_vol",
    "mpos_oi",
    "mneg_vol",
    "mneg_oi",
    "net_gex_vol",
    "net_gex_oi",
)
INT_FIELDS: tuple[str, ...] = ("min_dte", "sec_min_dte")
PAIR_FIELDS: tuple[str, ...] = ("current", "one", "five", "ten", "fifteen", "thirty")
PAIR_LIST_FIELDS: tuple[str, ...] = ("max_priors",)
KNOWN_FIELDS: frozenset[str] = frozenset(
    {"timestamp", "ticker", "strikes", *FLOAT_FIELDS, *INT_FIELDS, *PAIR_FIELDS, *PAIR_LIST_FIELDS}
)
REQUIRED_FIELDS: tuple[str, ...] = ("timestamp", "ticker", "spot")
# Unix seconds: anything at or above this is milliseconds (or nonsense), not seconds.
MAX_UNIX_SECONDS = 1e11
# Integers beyond 2**53 are not exact as doubles (pyarrow refuses them); whole-number fields hold
# int64.
MAX_EXACT_INT = 2**53
INT64_RANGE = range(-(2**63), 2**63)


class GexRecordError(ValueError):
    """A staged file cannot be imported: the message names the record, field and expectation."""


@dataclass
class ParsedFile:
    table: pa.Table
    records: int
    source_fields: set[str] = field(default_factory=set)  # every top-level field seen


def required_fields(endpoint: str) -> tuple[str, ...]:
    """`timestamp`, `ticker`, and `spot` except for maxchange records, which have none."""
    if endpoint.endswith("maxchange"):
        return ("timestamp", "ticker")
    return REQUIRED_FIELDS


def decode_bytes(data: bytes, *, name: str, max_bytes: int) -> bytes:
    """The file's JSON bytes, decompressed if it is gzip or bz2, within the size limit."""
    if data[:2] == b"\x1f\x8b":
        try:
            out = gzip.GzipFile(fileobj=io.BytesIO(data)).read(max_bytes + 1)
        except (OSError, EOFError) as exc:
            raise GexRecordError(f"{name}: a broken gzip file ({exc})") from None
    elif data[:3] == b"BZh":
        try:
            out = bz2.BZ2Decompressor().decompress(data, max_length=max_bytes + 1)
        except OSError as exc:
            raise GexRecordError(f"{name}: a broken bz2 file ({exc})") from None
    elif data[:4] == b"\x28\xb5\x2f\xfd":
        raise GexRecordError(f"{name}: zstd-compressed; expected JSON, gzip or bz2")
    else:
        return data
    if len(out) > max_bytes:
        raise GexRecordError(
            f"{name}: decompresses to more than the size limit of {max_bytes:,} bytes"
        )
    return out


def check_looks_like_json(head: bytes, *, name: str) -> None:
    """The light check made when a file is staged: it starts like JSON (or is compressed)."""
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh":
        return
    start = head.lstrip()[:80]
    if not start:
        raise GexRecordError(
            f"{name}: the file is empty; expected a JSON object or list of GEX records"
        )
    if start.startswith(b"<"):
        snippet = start.decode("utf-8", "replace").replace("\n", " ")
        raise GexRecordError(
            f"{name}: an HTML/XML page, not JSON (starts with {snippet!r}); the server probably "
            "answered with an error page"
        )


def load_json(data: bytes, *, name: str) -> Any:
    """The decoded JSON, or an error that says what the file looks like instead."""
    check_looks_like_json(data[:4096], name=name)
    try:
        # orjson: twice as fast as the standard library on a day's history; it refuses NaN,
        # Infinity and numbers that overflow a double, as JSON does.
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "utf-8" in str(exc).lower():
            raise GexRecordError(f"{name}: not UTF-8 text ({exc}); expected JSON") from None
        raise GexRecordError(
            f"{name}: malformed JSON at line {exc.lineno} column {exc.colno} (byte {exc.pos}): {exc.msg}"
        ) from None


def _type_name(value: Any) -> str:
    text = json.dumps(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _fail(where: str, field_name: str, expected: str, value: Any) -> GexRecordError:
    return GexRecordError(
        f"{where} field {field_name!r}: expected {expected}, got {_type_name(value)}"
    )


def _finite(value: Any) -> bool:
    if type(value) is int:
        return -MAX_EXACT_INT <= value <= MAX_EXACT_INT
    return type(value) is float and math.isfinite(value)


def _num_or_null(value: Any) -> bool:
    # json.loads reads 1e999 as infinity: a finite number or null only.
    return value is None or _finite(value)


def _pair(value: Any) -> bool:
    return type(value) is list and len(value) == 2 and all(_num_or_null(v) for v in value)


def parse_records(
    data: bytes, *, job_id: int, endpoint: str, name: str, max_bytes: int = 1 << 40
) -> ParsedFile:
    """The canonical rows of one staged file (raw bytes, compressed or not)."""
    document = load_json(decode_bytes(data, name=name, max_bytes=max_bytes), name=name)
    if isinstance(document, dict):
        records = [document]
    elif isinstance(document, list):
        records = document
        if not records:
            raise GexRecordError(f"{name}: an empty list; expected at least one GEX record")
    else:
        raise GexRecordError(
            f"{name}: the top level is {_type_name(document)}; expected a JSON object or a list of them"
        )
    return build_table(records, job_id=job_id, endpoint=endpoint, name=name)


_NO_STRIKES: list[tuple[None, None, None, None]] = [(None, None, None, None)]
_NUMBER_TYPES = {int, float}
_NUMBER_OR_NULL_TYPES = {int, float, type(None)}


def _all_finite(array: pa.Array) -> bool:
    return bool(pc.all(pc.is_finite(array)).as_py() is not False)


def _strike_columns(groups: list[Any]) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array] | None:
    """The strike columns of all snapshots at once, or None if any item breaks a rule.

    Checks run over whole columns (types as sets, finiteness in Arrow), which is what keeps a
    50 MB history fast; `_check_strikes` then finds the culprit for the error message.
    """
    flat = list(itertools.chain.from_iterable(groups))
    if set(map(type, flat)) - {list, tuple}:
        return None
    lengths = set(map(len, flat))
    if lengths - {3, 4}:
        return None
    if 3 in lengths:
        flat = [item if len(item) == 4 else [*item, None] for item in flat]
    strikes, vols, ois, priors = zip(*flat, strict=True) if flat else ((), (), (), ())
    if set(map(type, strikes)) - _NUMBER_OR_NULL_TYPES:
        return None
    if (set(map(type, vols)) | set(map(type, ois))) - _NUMBER_OR_NULL_TYPES:
        return None
    if set(map(type, priors)) - {list, type(None)}:
        return None
    prior_values = itertools.chain.from_iterable(p for p in priors if p is not None)
    if set(map(type, prior_values)) - _NUMBER_OR_NULL_TYPES:
        return None
    try:
        strike_arr = pa.array(strikes, pa.float64())
        vol_arr, oi_arr = pa.array(vols, pa.float64()), pa.array(ois, pa.float64())
        prior_arr = pa.array(priors, pa.list_(pa.float64()))
    except pa.ArrowInvalid:
        return None  # an integer a double cannot hold exactly
    placeholders = sum(1 for g in groups if g is _NO_STRIKES)
    if strike_arr.null_count != placeholders:
        return None  # a null strike in a real item
    if not all(_all_finite(a) for a in (strike_arr, vol_arr, oi_arr, pc.list_flatten(prior_arr))):
        return None
    return strike_arr, vol_arr, oi_arr, prior_arr


def _check_strikes(where: str, items: list[Any]) -> None:
    """Raise naming the first item of one snapshot's strikes that breaks a rule."""
    for j, item in enumerate(items):
        if type(item) is not list or not 3 <= len(item) <= 4:
            raise _fail(
                where, f"strikes[{j}]", "a [strike, gex_vol, gex_oi, [priors...]] list", item
            )
        s, vol, oi = item[0], item[1], item[2]
        if s is None or not _num_or_null(s):
            raise _fail(where, f"strikes[{j}][0]", "the strike, a finite number", s)
        if not (_num_or_null(vol) and _num_or_null(oi)):
            raise _fail(
                where, f"strikes[{j}][1:3]", "gex_vol and gex_oi as numbers or null", [vol, oi]
            )
        p = item[3] if len(item) == 4 else None
        if p is not None and (type(p) is not list or not all(_num_or_null(x) for x in p)):
            raise _fail(where, f"strikes[{j}][3]", "a list of prior values (numbers or null)", p)


def build_table(records: list[Any], *, job_id: int, endpoint: str, name: str) -> ParsedFile:
    """Validate decoded records and explode their strikes into `SCHEMA` rows."""
    required = required_fields(endpoint)
    seen: set[str] = set()
    snap: dict[str, list[Any]] = {
        c: []
        for c in ("ticker", "timestamp", *FLOAT_FIELDS, *INT_FIELDS, *PAIR_FIELDS, "max_priors")
    }
    extras: list[str | None] = []
    # Per row: the snapshot it belongs to and the strike's own values.
    row_record: list[int] = []
    strike_index: list[int] = []
    groups: list[Any] = []  # per snapshot: its strikes, or _NO_STRIKES
    with_strikes: list[int] = []

    for i, record in enumerate(records):
        where = f"{name}: record {i}"
        if type(record) is not dict:
            raise GexRecordError(f"{where}: expected a JSON object, got {_type_name(record)}")
        seen.update(record)
        for req in required:
            if record.get(req) is None:
                state = "null" if req in record else "missing"
                raise GexRecordError(f"{where}: required field {req!r} is {state}")
        ts = record["timestamp"]
        if not _finite(ts) or not 0 < ts < MAX_UNIX_SECONDS:
            hint = (
                " (milliseconds? expected Unix seconds)"
                if _finite(ts) and ts >= MAX_UNIX_SECONDS
                else ""
            )
            raise _fail(where, "timestamp", f"Unix seconds, a positive number{hint}", ts)
        ticker = record["ticker"]
        if type(ticker) is not str or not ticker.strip():
            raise _fail(where, "ticker", "a non-empty string", ticker)
        snap["ticker"].append(ticker)
        snap["timestamp"].append(float(ts))
        for f in FLOAT_FIELDS:
            v = record.get(f)
            if v is not None and not _finite(v):
                raise _fail(where, f, "a finite number or null (an integer within 2**53)", v)
            snap[f].append(v)
        for f in INT_FIELDS:
            v = record.get(f)
            if v is not None:
                if type(v) is float and v.is_integer():
                    v = int(v)
                if type(v) is not int or v not in INT64_RANGE:
                    raise _fail(where, f, "a whole number (64-bit) or null", v)
            snap[f].append(v)
        for f in PAIR_FIELDS:
            v = record.get(f)
            if v is not None and not _pair(v):
                raise _fail(where, f, "a [strike, value] pair of numbers or null", v)
            snap[f].append(v)
        mp = record.get("max_priors")
        if mp is not None and (type(mp) is not list or not all(_pair(p) for p in mp)):
            raise _fail(where, "max_priors", "a list of [strike, value] pairs or null", mp)
        snap["max_priors"].append(mp)
        other = {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
        extras.append(json.dumps(other, sort_keys=True, separators=(",", ":")) if other else None)

        items = record.get("strikes")
        if items is None or items == []:
            groups.append(_NO_STRIKES)
            row_record.append(i)
            strike_index.append(-1)
            continue
        if type(items) is not list:
            raise _fail(
                where, "strikes", "a list of [strike, gex_vol, gex_oi, [priors...]] items", items
            )
        groups.append(items)
        with_strikes.append(i)
        n = len(items)
        row_record.extend([i] * n)
        strike_index.extend(range(n))

    strike_columns = _strike_columns(groups)
    if strike_columns is None:
        # The bulk checks found something wrong: find and name the first bad item.
        for i in with_strikes:
            _check_strikes(f"{name}: record {i}", records[i]["strikes"])
        raise GexRecordError(
            f"{name}: a strikes item is not [strike, gex_vol, gex_oi, [priors...]]"
        )
    strikes_col, gex_vol, gex_oi, priors = strike_columns

    rows = len(row_record)
    take = pa.array(row_record, pa.int64())

    def per_row(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
        return pc.take(pa.array(values, arrow_type), take)

    timestamps = per_row(snap["timestamp"], pa.float64())
    micros = pc.cast(pc.round(pc.multiply(timestamps, 1_000_000.0)), pa.int64())
    columns: dict[str, pa.Array] = {
        "job_id": pa.array([job_id] * rows, pa.int64()),
        "endpoint": pc.take(pa.array([endpoint], pa.string()), pa.array([0] * rows, pa.int64())),
        "record_index": take,
        "strike_index": pa.array(strike_index, pa.int64()),
        "ticker": per_row(snap["ticker"], pa.string()),
        "timestamp": timestamps,
        "snapshot_ts_utc": micros.cast(pa.timestamp("us", tz="UTC")),
        "strike": strikes_col,
        "gex_vol": gex_vol,
        "gex_oi": gex_oi,
        "priors": priors,
        "extra_fields": per_row(extras, pa.string()),
    }
    for f in FLOAT_FIELDS:
        columns[f] = per_row(snap[f], pa.float64())
    for f in INT_FIELDS:
        columns[f] = per_row(snap[f], pa.int64())
    for f in PAIR_FIELDS:
        columns[f] = per_row(snap[f], pa.list_(pa.float64()))
    # A snapshot's `max_priors` is kept once, on its first row (strike_index 0, or -1 without
    # strikes): a taken index of null gives the other rows null.
    first_rows = pc.if_else(pc.less_equal(columns["strike_index"], 0), take, None)
    columns["max_priors"] = pc.take(
        pa.array(snap["max_priors"], pa.list_(pa.list_(pa.float64()))), first_rows
    )
    table = pa.Table.from_arrays([columns[f.name] for f in SCHEMA], schema=SCHEMA)
    return ParsedFile(table=table, records=len(records), source_fields=seen)


def fields_in_table(table: pa.Table) -> set[str]:
    """The source fields a canonical table can hold: its source columns and `extra_fields` keys."""
    names = set(table.column_names)
    found = {f for f in KNOWN_FIELDS if f in names}
    if "strike" in names:
        found.add("strikes")
    for text in pc.unique(table["extra_fields"].drop_null()).to_pylist():
        found.update(json.loads(text))
    return found


def missing_fields(source_fields: Iterable[str], table: pa.Table) -> list[str]:
    """Source fields the canonical table does not hold (always empty unless something is broken)."""
    return sorted(set(source_fields) - fields_in_table(table))
