"""Lake files are byte-identical for the same rows, however the rows arrive, and read back intact."""

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st
from upath import UPath

from pipeline_assets.lib.parquet_lake import write_parquet

SCHEMA = pa.schema([("k", pa.int64()), ("s", pa.string()), ("f", pa.float64())])


def _table(values):
    return pa.table(
        {"k": [v[0] for v in values], "s": [v[1] for v in values], "f": [v[2] for v in values]},
        schema=SCHEMA,
    )


rows = st.lists(
    st.tuples(st.integers(-(2**40), 2**40), st.text(max_size=12), st.floats(allow_nan=False)),
    max_size=400,
)


@settings(max_examples=40, deadline=None)
@given(rows, st.lists(st.integers(1, 97), min_size=1, max_size=20), st.integers(1, 150))
def test_batching_does_not_change_the_bytes(tmp_path_factory, values, cuts, row_group_size):
    folder = tmp_path_factory.mktemp("p")
    table = _table(values)
    whole = write_parquet(
        UPath(folder / "whole.parquet"), table, row_group_size=row_group_size, fsync=False
    )

    def pieces():
        start, i = 0, 0
        while start < table.num_rows:
            size = cuts[i % len(cuts)]
            yield from table.slice(start, size).to_batches()
            start, i = start + size, i + 1

    streamed = write_parquet(
        UPath(folder / "streamed.parquet"),
        pieces(),
        schema=SCHEMA,
        row_group_size=row_group_size,
        fsync=False,
    )
    assert streamed.sha256 == whole.sha256
    on_disk = (folder / "streamed.parquet").read_bytes()
    assert (
        hashlib.sha256(on_disk).hexdigest() == streamed.sha256
        and len(on_disk) == streamed.size_bytes
    )
    back = pq.read_table(folder / "streamed.parquet")
    assert back.equals(table)
    expected_groups = -(-table.num_rows // row_group_size) if table.num_rows else 1
    assert pq.ParquetFile(folder / "streamed.parquet").num_row_groups == expected_groups
