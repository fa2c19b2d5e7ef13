"""A real EDSM dump downloaded by URL, sampled, and the sample sampled again: the trace walks
sample → sample → download → URL and verifies; a changed download is named."""

import bz2
import hashlib
import json
from pathlib import Path

from upath import UPath

from pipeline_assets.lib.download import download
from pipeline_assets.lib.sample import sample_file
from pipeline_assets.lib.trace import format_tree, trace

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_sample_of_a_download_traces_to_its_url(tmp_path):
    remote = tmp_path / "remote" / "bodies7days.json.bz2"
    remote.parent.mkdir()
    remote.write_bytes(bz2.compress((FIXTURES / "bodies7days.json").read_bytes()))
    root = tmp_path / "data"
    got = download(remote.as_uri(), root / "downloads" / "edsm", root=root)
    first = sample_file(got.path, regime="random", rows=10, seed=9, root=root)
    second = sample_file(first.sample_path, regime="head", rows=3, root=root)

    result = trace(second.sample_path)
    assert result.ok, format_tree(result)
    chain = [result.root]
    while chain[-1].children:
        (only,) = chain[-1].children
        chain.append(only)
    assert [(n.kind, n.role) for n in chain] == [
        ("file", "sample_metadata"),
        ("file", "sample_metadata"),
        ("file", "download_metadata"),
        ("url", "leaf"),
    ]
    assert chain[2].path == "downloads/edsm/bodies7days.json.bz2"
    assert chain[3].path == remote.as_uri()
    assert chain[3].verified is True
    assert chain[3].sha256 == hashlib.sha256(remote.read_bytes()).hexdigest()
    records = json.loads((FIXTURES / "bodies7days.json").read_text())
    assert all(r in records for r in json.loads(UPath(second.sample_path).read_text()))

    got.path.write_bytes(got.path.read_bytes() + b"\0")
    broken = trace(second.sample_path)
    assert [b.location for b in broken.broken] == [str(got.path)]
    assert "the file was changed after it was written" in broken.broken[0].reason
