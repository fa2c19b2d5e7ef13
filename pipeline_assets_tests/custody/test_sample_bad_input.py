"""Bad input to the sampler: truncated gzip and bz2, invalid JSON in the middle of a dump, an array
that never closes, data after it, an overlong record, a CSV row of the wrong width: each a clear
error naming the file and the offset or line."""

import bz2
import gzip
import io
import json
from pathlib import Path

import pytest

from pipeline_assets.lib.sample import SampleError, Source, _iter_array_scan, draw, sample_file

FIXTURES = Path(__file__).parent / "fixtures"
DUMP = (FIXTURES / "stations.json").read_bytes()


def sample_all(path: Path, regime: str = "random") -> None:
    draw(Source.open_path(path), regime, 3, seed=1)


def test_truncated_gzip_names_the_file_and_how_far_it_got(tmp_path):
    path = tmp_path / "stations.json.gz"
    path.write_bytes(gzip.compress(DUMP)[:-200])
    with pytest.raises(
        SampleError,
        match=r"stations\.json\.gz: truncated gzip stream after [\d,]+ decompressed bytes, at compressed offset",
    ):
        sample_all(path)


def test_truncated_bz2_names_the_file(tmp_path):
    path = tmp_path / "stations.json.bz2"
    path.write_bytes(bz2.compress(DUMP)[:-300])
    with pytest.raises(SampleError, match=r"stations\.json\.bz2: truncated bz2 stream"):
        sample_all(path)


def test_corrupt_gzip_names_the_file(tmp_path):
    data = bytearray(gzip.compress(DUMP))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "stations.json.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(SampleError, match=r"stations\.json\.gz: (corrupt|truncated) gzip stream"):
        sample_all(path)


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_invalid_json_in_the_middle_of_a_dump_names_its_byte_offset(tmp_path, compression):
    lines = DUMP.split(b"\n")
    lines[9] = lines[9].replace(b'"name":', b'"name" ', 1)
    broken = b"\n".join(lines)
    # Where the broken record starts, computed from the lines: after 9 lines and 4 spaces.
    record_start = sum(len(line) + 1 for line in lines[:9]) + 4
    bad_at = record_start + lines[9].strip().index(b'"name" ') + len(b'"name" ')
    path = tmp_path / ("stations.json" + (".gz" if compression == "gzip" else ""))
    path.write_bytes(gzip.compress(broken) if compression == "gzip" else broken)
    with pytest.raises(
        SampleError,
        match=rf"stations\.json(\.gz)?: invalid JSON at byte {bad_at:,}: Expecting ':' delimiter",
    ):
        sample_all(path)
    # A head sample that stops before the broken record does not see it.
    assert len(draw(Source.open_path(path), "head", 8).selection.records) == 8


def test_invalid_json_in_a_pretty_array_names_its_offset():
    records = [{"a": i, "b": [i, i + 1]} for i in range(50)]
    text = json.dumps(records, indent=2)
    bad_at = text.index('"a": 30')
    broken = text[:bad_at] + '"a" 30' + text[bad_at + len('"a": 30') :]
    with pytest.raises(SampleError, match=rf"pretty\.json: invalid JSON at byte {bad_at + 4:,}"):
        draw(
            Source.from_opener(lambda: io.BytesIO(broken.encode()), "pretty.json"),
            "random",
            2,
            seed=1,
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[\n    {"a":1},\n    {"a":2},\n',
            r"the JSON array is not closed: the input ends at byte 28",
        ),
        ('[{"a":1}, {"a":2}', r"the JSON array is not closed: the end of the input at byte 17"),
        (
            '[{"a":1}, {"a":"x',
            r"the JSON array is not closed: the element at byte 10 is cut off by the end of the input",
        ),
        ('[\n    {"a":1}\n]\n{"a":2}\n', r"data after the end of the array at byte 16 \(line 4\)"),
        ('[{"a":1}] x', r"data after the end of the array at byte 10"),
        ('[{"a":1},,{"a":2}]', r"missing array element before the comma at byte 9"),
        ('[{"a":1} {"a":2}]', r"expected ',' or '\]' at byte 9, found '{'"),
        ('[{"a":1}}]', r"expected ',' or '\]' at byte 8, found '}'"),
    ],
)
def test_a_broken_array_names_where(text, message):
    with pytest.raises(SampleError, match=rf"broken\.json: {message}"):
        draw(Source.from_opener(lambda: io.BytesIO(text.encode()), "broken.json"), "head", 100)


def test_an_overlong_record_is_refused_before_it_fills_memory():
    stream = io.BytesIO(b'[{"a": "' + b"x" * 5_000_000)
    with pytest.raises(
        SampleError,
        match=r"big\.json: the record starting at byte 1 is longer than 1,000,000 bytes",
    ):
        list(_iter_array_scan(stream, "big.json", max_record_bytes=1_000_000))


def test_a_csv_row_of_the_wrong_width_names_its_line(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(SampleError, match=r"rows\.csv: line 3: 3 fields, the header has 2"):
        sample_all(path)


def test_a_missing_file_and_negative_rows(tmp_path):
    with pytest.raises(SampleError, match=r"nope\.json: no such file"):
        sample_file(tmp_path / "nope.json", regime="head", rows=1, root=tmp_path)
    path = tmp_path / "ok.json"
    path.write_text("[1]")
    with pytest.raises(SampleError, match="rows must be 0 or more"):
        sample_file(path, regime="head", rows=-1, root=tmp_path)


def test_a_failed_sample_leaves_no_file(tmp_path):
    path = tmp_path / "stations.json.gz"
    path.write_bytes(gzip.compress(DUMP)[:-200])
    with pytest.raises(SampleError):
        sample_file(path, regime="random", rows=2, seed=1, root=tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["stations.json.gz"]


def test_without_validation_only_kept_records_are_parsed(tmp_path):
    lines = DUMP.split(b"\n")
    lines[9] = lines[9].replace(b'"name":', b'"name" ', 1)
    bad_at = sum(len(line) + 1 for line in lines[:9]) + 4 + lines[9].strip().index(b'"name" ') + 7
    path = tmp_path / "stations.json"
    path.write_bytes(b"\n".join(lines))
    source = Source.open_path(path)
    # Records 0..7 do not include the broken record 8: no error without validation.
    assert len(draw(source, "systematic", 4, step=2, validate=False).selection.records) == 4
    with pytest.raises(SampleError, match=rf"stations\.json: invalid JSON at byte {bad_at:,}"):
        draw(source, "head", 9, validate=False)
