"""Benchmark: the sampler against plain reading of the same file, in the same run.

Generates an EDSM-style JSON array (`[`, one record per line with a comma, `]`) of about `--mb`
megabytes, and a gzip JSON Lines file of the same records, then measures, each in a fresh
process (so that its peak RSS is its own):

- `random` sampling of `--rows` records (reservoir, seeded) with `pipeline_assets.lib.sample`,
  parsing every record (the default) and parsing only the records kept (`--no-validate`);
- the plain baseline on the same file: reading it line by line and `json.loads` of every record
  (for the gzip file: `gzip.open` line by line, `json.loads` of each);
- `gzip -dc FILE | wc -l` on the gzip file (decompression and line counting alone, no parsing);

and prints MB/s of uncompressed input, the ratio sampler / baseline, and peak RSS.

    python bench/sample.py [--mb 500] [--rows 10000] [--keep DIR]

With `--gzip-mb N` it runs the issue's own measurement instead: a gzip JSON Lines dump of about N
MB *compressed* (1,000 for the 1 GB dump), sampled at random (seeded, with and without parsing
every record), against `gzip -dc FILE | wc -l` on the same file in the same run: seconds, peak
RSS, and the ratio (gzip -dc | wc -l seconds / sampler seconds; above 1: faster than it).

    python bench/sample.py --gzip-mb 1000 [--rows 10000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECORD = (
    '{{"id":{i},"id64":{id64},"name":"Synuefe {i:08d}","coords":{{"x":{x}.40625,"y":-{y}.9375,"z":{z}.28125}},'
    '"date":"2017-05-11 08:45:37","allegiance":"Independent","population":{pop},'
    '"bodies":[{{"id":{i},"name":"Body {i} A 1","type":"Planet","gravity":0.3109730153320206}}]}}'
)

SAMPLER = """
import json, resource, sys, time
from pipeline_assets.lib.sample import Source, draw
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
sample = draw(Source.open_path(sys.argv[1]), "random", int(sys.argv[2]), seed=42,
              validate=sys.argv[3] == "validate")
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "records": sample.selection.records_read,
                  "kept": len(sample.selection.records), "imported": imported,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

BASELINE = """
import gzip, json, resource, sys, time
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
n = 0
opener = gzip.open if sys.argv[1].endswith(".gz") else open
with opener(sys.argv[1], "rb") as f:
    for line in f:
        line = line.strip()
        if line in (b"[", b"]", b""):
            continue
        json.loads(line[:-1] if line.endswith(b",") else line)
        n += 1
print(json.dumps({"seconds": time.perf_counter() - t0, "records": n, "imported": imported,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def generate(folder: Path, megabytes: int) -> tuple[Path, Path, int]:
    array, lines = folder / "systems.json", folder / "systems.jsonl"
    target = megabytes * 1_000_000
    written = 0
    i = 0
    with array.open("w") as out_a, lines.open("w") as out_l:
        out_a.write("[\n")
        first = True
        while written < target:
            block = [
                RECORD.format(i=j, id64=j * 7919, x=j % 40000, y=j % 977, z=j % 3001, pop=j * 13)
                for j in range(i, i + 10_000)
            ]
            i += 10_000
            text = ",\n".join("    " + r for r in block)
            out_a.write(("" if first else ",\n") + text)
            out_l.write("\n".join(block) + "\n")
            written += len(text) + 2
            first = False
        out_a.write("\n]\n")
    gz = folder / "systems.jsonl.gz"
    with gz.open("wb") as out:
        subprocess.run(["gzip", "-1", "-c", str(lines)], stdout=out, check=True)
    lines.unlink()
    return array, gz, i


def generate_gzip(folder: Path, compressed_mb: int) -> tuple[Path, int]:
    """A gzip JSON Lines file of about `compressed_mb` MB, the records piped through `gzip -1`."""
    gz = folder / "systems.jsonl.gz"
    target = compressed_mb * 1_000_000
    i = 0
    with gz.open("wb") as out:
        gzip_proc = subprocess.Popen(["gzip", "-1", "-c"], stdin=subprocess.PIPE, stdout=out)
        assert gzip_proc.stdin is not None
        while gz.stat().st_size < target:
            for _ in range(20):  # 200,000 records between looks at the size
                block = [
                    RECORD.format(
                        i=j, id64=j * 7919, x=j % 40000, y=j % 977, z=j % 3001, pop=j * 13
                    )
                    for j in range(i, i + 10_000)
                ]
                gzip_proc.stdin.write(("\n".join(block) + "\n").encode())
                i += 10_000
        gzip_proc.stdin.close()
        if gzip_proc.wait() != 0:
            raise RuntimeError("gzip failed")
    return gz, i


def gzip_run(folder: Path, compressed_mb: int, rows: int) -> None:
    """The 1 GB measurement: sampler against `gzip -dc | wc -l` on one gzip JSON Lines dump."""
    t0 = time.perf_counter()
    gz, records = generate_gzip(folder, compressed_mb)
    size = gz.stat().st_size / 1e6
    print(
        f"generated {records:,} records: {gz.name} {size:,.0f} MB gzip -1 in {time.perf_counter() - t0:.0f} s"
    )
    wc_seconds = gzip_wc(gz)
    samp = child(SAMPLER, str(gz), str(rows), "validate")
    fast = child(SAMPLER, str(gz), str(rows), "no-validate")
    for m in (samp, fast):
        assert m["records"] == records and m["kept"] == min(rows, records), (m, records)
    print(
        f"{'reader':<34} {'seconds':>8} {'compressed MB/s':>16} {'peak RSS MB':>12} {'growth MB':>10} {'ratio':>6}"
    )
    for label, m in (
        ("gzip -dc | wc -l", {"seconds": wc_seconds, "rss": None}),
        (f"sampler random {rows:,}", samp),
        ("  the same, --no-validate", fast),
    ):
        rss = f"{m['rss'] / 1e6:,.0f}" if m["rss"] else "-"
        growth = f"{(m['rss'] - m['imported']) / 1e6:,.0f}" if m["rss"] else "-"
        print(
            f"{label:<34} {m['seconds']:>8.1f} {size / m['seconds']:>16.1f} {rss:>12} {growth:>10} "
            f"{wc_seconds / m['seconds']:>6.2f}"
        )
    print(
        "ratio: gzip -dc | wc -l seconds over this reader's (above 1: faster); growth: peak RSS "
        "less RSS after imports"
    )


def child(script: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def gzip_wc(path: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(f"gzip -dc '{path}' | wc -l", shell=True, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mb", type=int, default=500, help="size of the generated JSON array in MB"
    )
    parser.add_argument("--rows", type=int, default=10_000, help="records to sample")
    parser.add_argument("--keep", help="generate into this folder and keep the files")
    parser.add_argument(
        "--gzip-mb",
        type=int,
        default=0,
        help="instead: a gzip JSON Lines dump of about this many MB compressed, vs gzip -dc | wc -l",
    )
    args = parser.parse_args()

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-sample-"))
    folder.mkdir(parents=True, exist_ok=True)
    if args.gzip_mb:
        try:
            gzip_run(folder, args.gzip_mb, args.rows)
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
        return 0
    try:
        t0 = time.perf_counter()
        array, gz, records = generate(folder, args.mb)
        mb = array.stat().st_size / 1e6
        print(
            f"generated {records:,} records: {array.name} {mb:,.0f} MB, {gz.name} "
            f"{gz.stat().st_size / 1e6:,.0f} MB (gzip -1) in {time.perf_counter() - t0:.0f} s"
        )
        print(
            f"{'input':<18} {'reader':<30} {'seconds':>8} {'MB/s':>7} {'peak RSS MB':>12} {'growth MB':>10} {'ratio':>6}"
        )
        for path in (array, gz):
            base = child(BASELINE, str(path))
            samp = child(SAMPLER, str(path), str(args.rows), "validate")
            fast = child(SAMPLER, str(path), str(args.rows), "no-validate")
            for m in (samp, fast):
                assert m["records"] == base["records"] == records, (m, base, records)
                assert m["kept"] == min(args.rows, records)
            rows = [
                ("json.loads line by line", base),
                (f"sampler random {args.rows:,}", samp),
                ("  the same, --no-validate", fast),
            ]
            if path is gz:
                rows.append(("gzip -dc | wc -l", {"seconds": gzip_wc(path), "rss": None}))
            for label, m in rows:
                ratio = base["seconds"] / m["seconds"]
                rss = f"{m['rss'] / 1e6:,.0f}" if m["rss"] else "-"
                growth = f"{(m['rss'] - m['imported']) / 1e6:,.0f}" if m["rss"] else "-"
                print(
                    f"{path.name:<18} {label:<30} {m['seconds']:>8.1f} {mb / m['seconds']:>7.1f} "
                    f"{rss:>12} {growth:>10} {ratio:>6.2f}"
                )
        print(
            "MB/s: of uncompressed input; growth: peak RSS less RSS after imports; ratio: the "
            "baseline's time over this reader's (above 1: faster than the baseline)"
        )
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
