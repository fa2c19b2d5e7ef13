"""The import flow end to end: enqueue and import through the `pipeline gex` command, skip by
checksum, every source field in the canonical Parquet (read back with DuckDB), bad files, and
names that would leave their folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from upath import UPath

from pipeline_assets.lib.custody import verify_file
from pipeline_assets.lib.gex.store import GexInputError
from pipeline_assets_tests.gex.conftest import snapshot, write_json

PIPELINE = str(Path(sys.executable).parent / "pipeline")


def cli(
    data_root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PIPELINE_DATA_ROOT": str(data_root),
        "PIPELINE_GEX_MAX_DOWNLOAD_MB": "1",
        **(env or {}),
    }
    return subprocess.run(
        [PIPELINE, "gex", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def canonical_files(data_root: Path) -> list[Path]:
    return (
        sorted((data_root / "parquet/gex").rglob("*.parquet"))
        if (data_root / "parquet/gex").exists()
        else []
    )


def test_a_file_enqueued_twice_through_the_cli_is_skipped_by_checksum(data_root, sources):
    src = write_json(sources, "spx.json", [snapshot(), snapshot(ts=1771511460)])
    first = cli(data_root, "enqueue", src.as_uri(), "--ticker", "SPX", "--endpoint", "gex_zero")
    assert first.returncode == 0, first.stderr
    job = json.loads(first.stdout)
    assert (job["status"], job["skipped"]) == ("pending", False)
    imported = cli(data_root, "import")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["status"] == "completed"
    # The same bytes under another URL: the checksum matches the completed import.
    copy = write_json(sources, "copy.json", src.read_text())
    second = json.loads(
        cli(data_root, "enqueue", copy.as_uri(), "--ticker", "SPX", "--endpoint", "gex_zero").stdout
    )
    assert (second["status"], second["skipped"], second["duplicate_of"]) == (
        "skipped",
        True,
        job["id"],
    )
    assert second["checksum"] == job["checksum"]
    assert cli(data_root, "import").stdout == ""  # nothing pending
    assert len(canonical_files(data_root)) == 1


def test_every_source_field_is_in_the_canonical_parquet(importer, data_root, sources):
    records = [
        snapshot(ts=1771511400 + 60 * i, strikes=4, vendor_note=f"n{i}", nested={"a": [i, None]})
        for i in range(3)
    ]
    records[1]["strikes"] = []
    src = write_json(sources, "spx.json", records)
    job = importer.import_job(importer.enqueue(src.as_uri(), "SPX", "gex_zero").id)
    assert job.status == "completed" and job.records_processed == 3
    (path,) = canonical_files(data_root)
    assert (
        path.relative_to(data_root).as_posix()
        == f"parquet/gex/2026/02/SPX/gex_zero/strikes_job{job.id}.parquet"
    )
    verify_file(UPath(path))
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT * FROM read_parquet('{path}') ORDER BY record_index, strike_index"
    ).fetchall()
    names = [d[0] for d in con.description]
    by_record: dict[int, list[dict]] = {}
    for row in rows:
        r = dict(zip(names, row, strict=True))
        by_record.setdefault(r["record_index"], []).append(r)
    for i, source in enumerate(records):
        got = by_record[i]
        for field, value in source.items():
            if field == "strikes":
                strikes = [
                    [r["strike"], r["gex_vol"], r["gex_oi"], r["priors"]]
                    for r in got
                    if r["strike_index"] >= 0
                ]
                assert strikes == value
            elif field == "max_priors":  # once per snapshot: on its first row, null after
                first, *others = sorted(got, key=lambda r: r["strike_index"])
                assert first[field] == value and all(r[field] is None for r in others)
            elif field in names:
                assert all(r[field] == value for r in got), field
            else:  # kept as JSON in extra_fields
                assert all(json.loads(r["extra_fields"])[field] == value for r in got), field
    assert con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()[0] == 4 + 1 + 4
    # The staged file is read-only, with its download sidecar; gex_data.db holds the rows.
    staged = data_root / job.staged_path
    assert (
        staged.name == "2026-02-19_SPX_classic_gex_zero.json"
        and not os.access(staged, os.W_OK)
        or os.geteuid() == 0
    )
    assert oct(staged.stat().st_mode & 0o777) == "0o444"
    data = duckdb.connect(str(data_root / "gex_data.db"), read_only=True)
    assert (
        data.execute("SELECT count(*) FROM strikes WHERE job_id = ?", [job.id]).fetchone()[0] == 9
    )


BAD_FILES = {
    "malformed JSON": ('[{"timestamp": 1771511400, "ticker": "SPX"', "malformed JSON at line 1"),
    "HTML error page": (
        "<!DOCTYPE html><html><title>502 Bad Gateway</title></html>",
        "an HTML/XML page",
    ),
    "missing spot": (
        json.dumps([{k: v for k, v in snapshot().items() if k != "spot"}]),
        "required field 'spot' is missing",
    ),
    "null timestamp": (
        json.dumps([snapshot(timestamp=None)]),
        "required field 'timestamp' is null",
    ),
    "empty list": ("[]", "an empty list"),
    "over the size limit": (json.dumps([snapshot(strikes=8000)]), "larger than the size limit"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_fails_its_job_keeps_the_staged_file_and_writes_no_canonical_file(
    importer, data_root, sources, case
):
    content, message = BAD_FILES[case]
    src = write_json(sources, "bad.json", content)
    importer.config = importer.config.__class__(
        **{**importer.config.__dict__, "max_download_bytes": 100_000}
    )
    job = importer.import_job(importer.enqueue(src.as_uri(), "SPX", "gex_zero").id)
    assert job.status == "failed" and message in job.last_error, job.last_error
    assert canonical_files(data_root) == []
    if case == "over the size limit":
        assert job.staged_path is None  # nothing complete was downloaded
        assert not any(p.is_file() for p in (data_root / "source/gexbot").glob("*"))
    else:
        assert (data_root / job.staged_path).read_bytes() == src.read_bytes()
    history = [e["event"] for e in importer.store.history(job.id)]
    assert history[0] == "created" and history[-1] in ("failed", "staging_failed")


@pytest.mark.parametrize(
    ("ticker", "endpoint"),
    [("SPX/../x", "gex_zero"), ("..", "gex_zero"), ("SPX", "a/b"), ("SPX", "..\\x"), ("SPX", "")],
)
def test_names_with_a_path_separator_or_dotdot_are_refused_at_enqueue(
    importer, data_root, sources, ticker, endpoint
):
    src = write_json(sources, "ok.json", [snapshot()])
    with pytest.raises(GexInputError, match="refused"):
        importer.enqueue(src.as_uri(), ticker, endpoint)
    assert importer.store.jobs() == []


def test_the_cli_refuses_a_traversing_ticker_with_exit_2(data_root, sources):
    src = write_json(sources, "ok.json", [snapshot()])
    result = cli(data_root, "enqueue", src.as_uri(), "--ticker", "../etc", "--endpoint", "gex_zero")
    assert result.returncode == 2 and "must not contain a path separator or '..'" in result.stderr
