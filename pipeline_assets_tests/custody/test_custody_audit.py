"""A sidecar on everything the product writes: after a real materialization every data file under
the data and lake roots has a sidecar that verifies (the demo test audits the whole `pipeline
demo`); the audit names a file without one, a changed file and an orphaned sidecar."""

from pipeline_assets.lib.trace import audit_tree


def test_every_file_of_a_materialization_has_a_verifying_sidecar(landed):
    checked_data, problems_data = audit_tree(landed.data_root)
    checked_lake, problems_lake = audit_tree(landed.lake_root)
    assert problems_data == [] and problems_lake == []
    # The worker files are sources (exempt); every Parquet file in the lake was checked.
    assert checked_data == []
    parquet = sorted(
        str(p.relative_to(landed.lake_root)) for p in landed.lake_root.rglob("*.parquet")
    )
    assert parquet and [c for c in checked_lake if c.endswith(".parquet")] == parquet
    assert {c.split("/")[0] for c in checked_lake} == {"bronze", "gold"}


def test_the_audit_names_what_is_wrong(landed, tmp_path):
    copy = landed.copy(tmp_path)
    stray = copy.lake_root / "gold" / "report.csv"
    stray.write_text("a,b\n")
    changed = copy.bronze_trade_files()[0]
    changed.write_bytes(changed.read_bytes()[:-1] + b"\0")
    orphan = copy.gold_files()[0]
    orphan.unlink()
    _, problems = audit_tree(copy.lake_root)
    by_path = {p.location: p.reason for p in problems}
    assert sorted(by_path) == sorted(
        [
            "gold/report.csv",
            str(changed.relative_to(copy.lake_root)),
            str(orphan.relative_to(copy.lake_root)) + ".meta.json",
        ]
    )
    assert "sidecar report.csv.meta.json is missing" in by_path["gold/report.csv"]
    assert (
        "the file was changed after it was written"
        in by_path[str(changed.relative_to(copy.lake_root))]
    )
    assert (
        by_path[str(orphan.relative_to(copy.lake_root)) + ".meta.json"]
        == "a sidecar whose data file is missing"
    )


def test_temporaries_markers_and_sources_are_exempt(tmp_path):
    (tmp_path / "source" / "workers").mkdir(parents=True)
    (tmp_path / "source" / "workers" / "w.db").write_bytes(b"x")
    (tmp_path / "bronze" / "a").mkdir(parents=True)
    (tmp_path / "bronze" / "a" / "_empty.json").write_text("{}")
    (tmp_path / "bronze" / "a" / ".data.parquet.0123.tmp").write_bytes(b"partial")
    (tmp_path / "gex_history.db").write_bytes(b"duckdb")
    checked, problems = audit_tree(tmp_path)
    assert checked == [] and problems == []
