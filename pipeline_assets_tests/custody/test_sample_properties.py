"""Sampler properties over generated inputs: every regime returns records of the input at the right
positions and counts, the same seed gives the same sample, for JSON arrays in any layout, JSON
Lines and CSV, plain or compressed; uniform inclusion in the random regime."""

import bz2
import csv
import gzip
import io
import json
import random

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_assets.lib.sample import Format, Source, draw, encode_sample

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=12)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
records_st = st.lists(json_values, max_size=60)
csv_rows_st = st.lists(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            max_size=8,
        ),
        min_size=3,
        max_size=3,
    ),
    max_size=60,
)
layouts = st.sampled_from(["edsm", "compact", "pretty", "jsonl"])
compressions = st.sampled_from(["none", "gzip", "bz2", "zstd"])


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data)
    if how == "bz2":
        return bz2.compress(data)
    if how == "zstd":
        return pa.compress(data, "zstd", asbytes=True)
    return data


def render(records: list, layout: str) -> bytes:
    """Written independently of the sampler's own writer."""
    if layout == "edsm":
        body = ",\n".join("    " + json.dumps(r) for r in records)
        return ("[\n" + body + ("\n" if records else "") + "]\n").encode()
    if layout == "compact":
        return json.dumps(records).encode()
    if layout == "pretty":
        return json.dumps(records, indent=3, ensure_ascii=False).encode()
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def source_of(data: bytes, name: str = "input") -> Source:
    return Source.from_opener(lambda: io.BytesIO(data), name)


def positions_of(sample_records, total: int) -> list[int]:
    indices = [r.index for r in sample_records]
    assert indices == sorted(set(indices)) and all(0 <= i < total for i in indices)
    return indices


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records_st, layouts, compressions, st.integers(0, 70), st.integers(0, 2**32))
def test_json_regimes_return_input_records_at_the_right_positions(records, layout, how, rows, seed):
    if layout == "jsonl" and not records:
        records = [1]
    source = source_of(
        compress(render(records, layout), how), "input.jsonl" if layout == "jsonl" else "input.json"
    )
    assert source.format is (Format.JSON_LINES if layout == "jsonl" else Format.JSON_ARRAY)
    total = len(records)
    expected_count = min(rows, total)

    head = draw(source, "head", rows)
    assert [r.value for r in head.selection.records] == records[:rows]

    rnd = draw(source, "random", rows, seed=seed)
    idx = positions_of(rnd.selection.records, total)
    assert len(idx) == expected_count
    assert [r.value for r in rnd.selection.records] == [records[i] for i in idx]
    assert rnd.selection.records_read == total
    again = draw(source, "random", rows, seed=seed)
    assert [r.index for r in again.selection.records] == idx

    sys_ = draw(source, "systematic", rows, seed=seed)
    idx = positions_of(sys_.selection.records, total)
    assert len(idx) == expected_count
    if idx:
        step = max(1, total // rows)
        assert idx == list(range(idx[0], total, step))[:rows]
        assert idx[0] == random.Random(seed).randrange(step) == sys_.selection.source_offset
    assert [r.value for r in sys_.selection.records] == [records[i] for i in idx]


@settings(max_examples=60, deadline=None)
@given(records_st, st.integers(0, 10), st.integers(1, 9), st.data())
def test_systematic_with_a_step_reads_once(records, rows, step, data):
    start = data.draw(st.integers(0, step - 1))
    source = source_of(render(records, "edsm"))
    from pipeline_assets.lib.sample import SystematicStrategy

    _, stream = source.records()
    chosen = SystematicStrategy(rows, step, start).select(stream)
    assert [r.value for r in chosen.records] == records[start::step][:rows]


@settings(max_examples=60, deadline=None)
@given(csv_rows_st, compressions, st.integers(0, 70), st.integers(0, 2**16))
def test_csv_regimes_return_input_rows_and_the_header(rows_in, how, rows, seed):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["a", "b", "c"])
    writer.writerows(rows_in)
    source = source_of(compress(out.getvalue().encode(), how), "input.csv")
    # The rows as the csv module reads them back (blank lines are not records).
    expected = [r for r in csv.reader(io.StringIO(out.getvalue(), newline=""))][1:]
    expected = [r for r in expected if r]
    for regime in ("head", "random", "systematic"):
        sample = draw(source, regime, rows, seed=seed)
        assert sample.header == ["a", "b", "c"]
        idx = positions_of(sample.selection.records, len(expected))
        assert len(idx) == min(rows, len(expected))
        assert [r.value for r in sample.selection.records] == [expected[i] for i in idx]
        # The written sample reads back, by the csv module, as those rows under the header.
        written = b"".join(
            encode_sample(Format.CSV, sample.header, sample.selection.records)
        ).decode()
        assert list(csv.reader(io.StringIO(written, newline=""))) == [
            ["a", "b", "c"],
            *[expected[i] for i in idx],
        ]


@settings(max_examples=60, deadline=None)
@given(records_st, layouts)
def test_a_written_json_sample_reads_back_as_the_same_records(records, layout):
    name = "input.jsonl" if layout == "jsonl" else "input.json"
    source = source_of(render(records, layout), name)
    sample = draw(source, "head", len(records))
    fmt = source.format
    written = b"".join(encode_sample(fmt, None, sample.selection.records))
    if fmt is Format.JSON_ARRAY:
        assert json.loads(written) == records
    else:
        assert [json.loads(line) for line in written.splitlines()] == records
    # A sample is itself sampleable.
    assert [
        r.value for r in draw(source_of(written, name), "head", 1000).selection.records
    ] == records


def test_random_regime_includes_every_record_equally_often():
    records = list(range(20))
    source = source_of(render(records, "edsm"))
    counts = [0] * 20
    seeds = 3000
    for seed in range(seeds):
        for r in draw(source, "random", 5, seed=seed).selection.records:
            counts[r.value] += 1
    expected = seeds * 5 / 20
    assert all(abs(c - expected) < 0.12 * expected for c in counts), counts


@settings(max_examples=60, deadline=None)
@given(
    records_st,
    layouts,
    st.sampled_from(["head", "random", "systematic"]),
    st.integers(0, 30),
    st.integers(0, 99),
)
def test_sampling_without_validation_keeps_the_same_records(records, layout, regime, rows, seed):
    if layout == "jsonl" and not records:
        records = [1]
    name = "input.jsonl" if layout == "jsonl" else "input.json"
    source = source_of(render(records, layout), name)
    checked = draw(source, regime, rows, seed=seed)
    fast = draw(source, regime, rows, seed=seed, validate=False)
    # The same records (offsets may differ: a line's start, or an element's under the scanner).
    assert [(r.index, r.value) for r in fast.selection.records] == [
        (r.index, r.value) for r in checked.selection.records
    ]
