"""Sampling the real EDSM dumps and EDDN messages, plain, gzip and bz2, in all three regimes, with
`pipeline sample`: the records are the dump's, the same seed gives the same bytes, the sidecar
verifies and the trace reaches the dump."""

import bz2
import gzip
import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest
from upath import UPath

from pipeline_assets.cli import main
from pipeline_assets.lib.custody import read_sidecar, verify_file
from pipeline_assets.lib.trace import trace

FIXTURES = Path(__file__).parent / "fixtures"
EDSM_DUMPS = ["bodies7days.json", "stations.json", "systemsWithCoordinates.json", "codex.json"]
COMPRESSORS = {
    "none": lambda b: b,
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "bz2": bz2.compress,
}


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    (root / "source" / "edsm").mkdir(parents=True)
    monkeypatch.setenv("PIPELINE_DATA_ROOT", str(root))
    monkeypatch.delenv("PIPELINE_LAKE_ROOT", raising=False)
    return root


def place(root: Path, name: str, compression: str) -> Path:
    raw = (FIXTURES / name).read_bytes()
    suffix = {"none": "", "gzip": ".gz", "bz2": ".bz2"}[compression]
    target = root / "source" / "edsm" / (name + suffix)
    target.write_bytes(COMPRESSORS[compression](raw))
    return target


def run_sample(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[Path, Path]:
    assert main(["sample", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    sample = Path(lines[0].removeprefix("sample").strip())
    sidecar = Path(lines[1].removeprefix("sidecar").strip())
    return sample, sidecar


@pytest.mark.parametrize("compression", ["none", "gzip", "bz2"])
@pytest.mark.parametrize("name", EDSM_DUMPS)
def test_every_regime_samples_the_real_dump(data_root, capsys, name, compression):
    source = place(data_root, name, compression)
    # Independent reading of the dump: the whole file through json.
    records = json.loads((FIXTURES / name).read_text())
    rows = 2
    for regime, extra in [
        ("head", []),
        ("random", ["--seed", "11"]),
        ("systematic", ["--seed", "11"]),
    ]:
        sample, sidecar = run_sample(
            capsys, str(source), "--regime", regime, "--rows", str(rows), *extra
        )
        assert sidecar == Path(str(sample) + ".meta.json")
        got = json.loads(sample.read_text())
        assert len(got) == min(rows, len(records))
        positions = [records.index(r) for r in got]
        assert positions == sorted(positions)
        if regime == "head":
            assert got == records[:rows]
        meta = verify_file(UPath(sample))
        assert meta.regime_type == regime
        assert meta.n_rows == len(got)
        assert meta.parent_sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
        assert meta.parents[0].path == f"source/edsm/{source.name}"
        assert meta.parents[0].details["compression"] == compression
        assert meta.sampler_version == "1.0"
        assert meta.source_offset == (positions[0] if regime != "head" else 0)
        result = trace(sample, roots=[data_root])
        assert result.ok, result.broken
        assert [c.path for c in result.root.children] == [f"source/edsm/{source.name}"]
        assert result.root.children[0].role == "source"


@pytest.mark.parametrize("regime", ["random", "systematic"])
def test_the_same_seed_gives_the_same_sample_bytes(data_root, capsys, tmp_path, regime):
    source = place(data_root, "bodies7days.json", "gzip")
    first, _ = run_sample(capsys, str(source), "--regime", regime, "--rows", "5", "--seed", "3")
    kept = tmp_path / "first.json"
    shutil.copy(first, kept)
    again, _ = run_sample(capsys, str(source), "--regime", regime, "--rows", "5", "--seed", "3")
    assert again == first
    assert again.read_bytes() == kept.read_bytes()
    if regime == "random":
        other, _ = run_sample(
            capsys,
            str(source),
            "--regime",
            regime,
            "--rows",
            "5",
            "--seed",
            "4",
            "--out",
            str(tmp_path / "o.json"),
        )
        assert other.read_bytes() != kept.read_bytes()
    else:
        # 37 records, 5 wanted: every 7th, from a start the seed picks in [0, 7).
        records = json.loads((FIXTURES / "bodies7days.json").read_text())
        start = random.Random(3).randrange(7)
        assert json.loads(kept.read_text()) == records[start::7][:5]


def test_bz2_named_gz_is_read_as_bz2(data_root, capsys):
    target = data_root / "source" / "edsm" / "stations.json.gz"
    target.write_bytes(bz2.compress((FIXTURES / "stations.json").read_bytes()))
    sample, _ = run_sample(capsys, str(target), "--regime", "head", "--rows", "3")
    assert (
        json.loads(sample.read_text()) == json.loads((FIXTURES / "stations.json").read_text())[:3]
    )
    assert read_sidecar(UPath(sample)).parents[0].details["compression"] == "bz2"


def test_pretty_printed_eddn_messages_go_through_the_scanner(data_root, capsys):
    source = data_root / "source" / "eddn.json"
    shutil.copy(FIXTURES / "cogbot_eddn_shipyard.json", source)
    messages = json.loads(source.read_text())
    sample, _ = run_sample(capsys, str(source), "--regime", "systematic", "--rows", "3")
    # 9 messages, 3 wanted: every third from the first.
    assert json.loads(sample.read_text()) == messages[0::3]
    # The sample itself is in the one-record-per-line layout.
    lines = sample.read_text().splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 5


def test_sample_outside_the_data_root_names_its_source_as_a_file_url(data_root, capsys, tmp_path):
    out = tmp_path / "elsewhere" / "codex-head.json"
    sample, _ = run_sample(
        capsys, str(FIXTURES / "codex.json"), "--regime", "head", "--rows", "1", "--out", str(out)
    )
    assert sample == out
    meta = read_sidecar(UPath(out))
    assert meta.path == "codex-head.json"
    assert meta.parents[0].kind == "url"
    assert meta.parents[0].path == (FIXTURES / "codex.json").as_uri()
    result = trace(out)
    assert result.ok and result.root.children[0].verified is True


def test_a_sample_of_a_jsonl_and_a_csv_keeps_the_format(data_root, capsys):
    records = json.loads((FIXTURES / "stations.json").read_text())
    jsonl = data_root / "source" / "stations.jsonl.gz"
    jsonl.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    sample, _ = run_sample(capsys, str(jsonl), "--regime", "random", "--rows", "4", "--seed", "1")
    got = [json.loads(line) for line in sample.read_text().splitlines()]
    assert sample.suffix == ".jsonl" and len(got) == 4 and all(r in records for r in got)

    csv_file = data_root / "source" / "stations.csv.bz2"
    lines = ["id,name,marketId"] + [
        f'{r["id"]},"{r["name"]}",{r["marketId"] or ""}' for r in records
    ]
    csv_file.write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    sample, _ = run_sample(capsys, str(csv_file), "--regime", "head", "--rows", "2")
    assert sample.read_text().splitlines()[0] == "id,name,marketId"
    assert sample.read_text().splitlines()[1].split(",")[0] == str(records[0]["id"])


def test_a_broken_dump_is_an_error_naming_file_and_offset(data_root, capsys):
    source = data_root / "source" / "broken.json"
    shutil.copy(FIXTURES / "scan-invalid-JSON.json", source)
    assert main(["sample", str(source), "--regime", "head", "--rows", "1"]) == 1
    err = capsys.readouterr().err
    assert str(source) in err and "byte 1" in err


def test_no_validate_gives_the_same_sample_and_says_so(data_root, capsys, tmp_path):
    source = place(data_root, "stations.json", "gzip")
    checked, _ = run_sample(capsys, str(source), "--regime", "random", "--rows", "6", "--seed", "2")
    kept = checked.read_bytes()
    fast, _ = run_sample(
        capsys, str(source), "--regime", "random", "--rows", "6", "--seed", "2", "--no-validate"
    )
    assert fast == checked and fast.read_bytes() == kept
    assert read_sidecar(UPath(fast)).parents[0].details["validated"] is False
