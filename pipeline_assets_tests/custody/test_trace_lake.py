"""`pipeline trace` on files of a real materialization: a gold file traces through bronze to the
collectors' worker files and verifies; one changed byte, a missing sidecar or a missing source
breaks the trace, which names the link; `--json` gives every node's path, SHA256, kind, verified."""

import hashlib
import json
from pathlib import Path

import pytest

from pipeline_assets.cli import main
from pipeline_assets.lib.trace import format_tree, trace


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def roots(landed) -> list[str]:
    return [str(landed.data_root), str(landed.lake_root)]


def test_a_gold_file_traces_to_the_worker_files_and_verifies(landed):
    gold = landed.gold_files()[0]
    result = trace(gold, roots=roots(landed))
    assert result.ok, result.broken
    bronze = result.root.children
    # The day's bronze trade files, one per symbol, each made from both worker files.
    day = gold.parent.name
    expected_bronze = sorted(
        str(p.relative_to(landed.lake_root))
        for p in landed.bronze_trade_files()
        if p.parent.parent.name == day
    )
    assert sorted(n.path for n in bronze) == expected_bronze
    for node in bronze:
        assert node.verified and node.role == "processed_metadata"
        assert node.actual_sha256 == sha(landed.lake_root / node.path)
        leaves = {c.path: c for c in node.children}
        assert sorted(leaves) == sorted(f"source/workers/{w.name}" for w in landed.workers)
        for leaf in leaves.values():
            assert leaf.role == "source" and leaf.verified
            assert leaf.location == str(landed.data_root / leaf.path)
            assert leaf.actual_sha256 == sha(landed.data_root / leaf.path)
    text = format_tree(result)
    assert text.splitlines()[0].startswith(str(gold))
    assert "BROKEN" not in text and text.count("source/workers/") == 2 * len(bronze)


def test_pipeline_trace_json_lists_every_node(landed, capsys, monkeypatch):
    monkeypatch.setenv("PIPELINE_DATA_ROOT", str(landed.data_root))
    monkeypatch.setenv("PIPELINE_LAKE_ROOT", str(landed.lake_root))
    gold = landed.gold_files()[-1]
    assert main(["trace", str(gold), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["broken"] == []

    def nodes(node):
        yield node
        for child in node["children"]:
            yield from nodes(child)

    all_nodes = list(nodes(out["tree"]))
    assert {n["kind"] for n in all_nodes} == {"file"}
    for node in all_nodes:
        assert node["verified"] is True
        assert node["sha256"] == sha(Path(node["location"]))
    assert out["tree"]["location"] == str(gold)


def test_one_changed_byte_in_bronze_breaks_the_gold_trace_naming_the_bronze_file(
    landed, tmp_path, capsys, monkeypatch
):
    copy = landed.copy(tmp_path)
    gold = copy.gold_files()[0]
    day = gold.parent.name
    bronze = next(p for p in copy.bronze_trade_files() if p.parent.parent.name == day)
    data = bytearray(bronze.read_bytes())
    data[len(data) // 2] ^= 0x01
    bronze.write_bytes(bytes(data))

    result = trace(gold, roots=[copy.data_root, copy.lake_root])
    assert [b.location for b in result.broken] == [str(bronze)]
    assert "the file was changed after it was written" in result.broken[0].reason
    assert result.root.verified is True

    monkeypatch.setenv("PIPELINE_DATA_ROOT", str(copy.data_root))
    monkeypatch.setenv("PIPELINE_LAKE_ROOT", str(copy.lake_root))
    assert main(["trace", str(gold)]) == 1
    captured = capsys.readouterr()
    assert f"broken link: {bronze}: SHA256 is" in captured.err
    assert "[BROKEN]" in captured.out


@pytest.mark.parametrize("damage", ["sidecar", "worker", "gold-sidecar"])
def test_a_missing_link_is_named(landed, tmp_path, damage):
    copy = landed.copy(tmp_path)
    gold = copy.gold_files()[0]
    day = gold.parent.name
    bronze = next(p for p in copy.bronze_trade_files() if p.parent.parent.name == day)
    if damage == "sidecar":
        Path(str(bronze) + ".meta.json").unlink()
        target, reason = bronze, "the file has no sidecar data.parquet.meta.json"
    elif damage == "worker":
        copy.workers[0].unlink()
        target, reason = copy.workers[0], "the file is missing"
    else:
        Path(str(gold) + ".meta.json").unlink()
        target, reason = gold, "the file has no sidecar"
    result = trace(gold, roots=[copy.data_root, copy.lake_root])
    assert [b.location for b in result.broken] == [str(target)]
    assert result.broken[0].reason.startswith(reason)


def test_a_changed_worker_file_is_named_although_it_has_no_sidecar(landed, tmp_path):
    copy = landed.copy(tmp_path)
    with copy.workers[1].open("ab") as handle:
        handle.write(b"\0")
    result = trace(copy.gold_files()[0], roots=[copy.data_root, copy.lake_root])
    assert [b.location for b in result.broken] == [str(copy.workers[1])]
    assert "was recorded when its child was made" in result.broken[0].reason
