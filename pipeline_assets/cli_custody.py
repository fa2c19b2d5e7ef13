"""`pipeline sample` and `pipeline trace`: the chain-of-custody subcommands of the `pipeline` CLI."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from upath import UPath

from pipeline_assets.lib.custody import CustodyError, sidecar_path
from pipeline_assets.lib.sample import Format, Regime, SampleError, sample_file
from pipeline_assets.lib.settings import Settings
from pipeline_assets.lib.trace import SOURCE_PREFIXES, format_tree, trace


def _sample(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        artifact = sample_file(
            args.file,
            regime=args.regime,
            rows=args.rows,
            seed=args.seed,
            step=args.step,
            out=args.out,
            fmt=Format(args.format) if args.format else None,
            validate=not args.no_validate,
            root=settings.data_root,
        )
    except (SampleError, CustodyError) as exc:
        print(f"pipeline sample: {exc}", file=sys.stderr)
        return 1
    meta = artifact.metadata
    print(f"sample  {artifact.sample_path}")
    print(f"sidecar {artifact.sidecar_path}")
    seed = f", seed {meta.seed}" if meta.seed is not None else ""
    print(
        f"{meta.n_rows} records, regime {meta.regime_type} ({meta.strategy_used}{seed}), "
        f"source offset {meta.source_offset}, sample sha256 {meta.sample_sha256}, "
        f"parent sha256 {meta.parent_sha256}"
    )
    parent = meta.parents[0]
    source = UPath(args.file)
    if (
        parent.kind == "file"
        and not parent.path.startswith(SOURCE_PREFIXES)
        and not sidecar_path(source).exists()
    ):
        print(
            f"note: {args.file} has no sidecar, so `pipeline trace` will name it as a broken link; "
            "download it with the downloader, or keep original sources under source/",
            file=sys.stderr,
        )
    return 0


def _trace(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    result = trace(args.file, roots=[str(settings.data_root), settings.lake_root])
    try:
        if args.json:
            print(json.dumps(result.to_json(), indent=2, sort_keys=True))
        else:
            print(format_tree(result))
        sys.stdout.flush()
    except BrokenPipeError:  # `pipeline trace FILE | head`
        sys.stdout = None  # type: ignore[assignment]
    for link in result.broken:
        print(f"pipeline trace: broken link: {link}", file=sys.stderr)
    return 0 if result.ok else 1


def add_custody_commands(commands: Any) -> None:
    """Register `sample` and `trace` on the `pipeline` parser's subcommands."""
    sample = commands.add_parser(
        "sample",
        help="draw a sample of a JSON array, JSON Lines or CSV file (compressed or not) with a custody sidecar",
    )
    sample.add_argument(
        "file", help="the file to sample (gzip, bz2, zstd or plain; told from its bytes)"
    )
    sample.add_argument(
        "--regime", required=True, choices=[r.value for r in Regime], help="how records are chosen"
    )
    sample.add_argument("--rows", required=True, type=int, help="records in the sample")
    sample.add_argument(
        "--seed", type=int, help="random seed (random: the reservoir; systematic: the start)"
    )
    sample.add_argument(
        "--step",
        type=int,
        help="systematic: take every STEP-th record (default: count the records first)",
    )
    sample.add_argument(
        "--format",
        choices=[f.value for f in Format],
        help="the input format (default: from the name and first byte)",
    )
    sample.add_argument(
        "--out", help="where to write the sample (default: <data root>/samples/...)"
    )
    sample.add_argument(
        "--no-validate",
        action="store_true",
        help="parse only the records kept (several times faster on one-record-per-line JSON; "
        "a broken record elsewhere goes unnoticed)",
    )
    sample.set_defaults(handler=_sample)

    trace_cmd = commands.add_parser(
        "trace", help="walk the sidecars from a file back to its sources, checking every SHA256"
    )
    trace_cmd.add_argument(
        "file", help="any file with a sidecar (lake file, sample, download, export)"
    )
    trace_cmd.add_argument("--json", action="store_true", help="print the tree as JSON")
    trace_cmd.set_defaults(handler=_trace)
