"""The `pipeline` command: what is not an asset run.

Every subcommand reads the same environment as the code location (`PIPELINE_*`, `DAGSTER_HOME`).
"""

from __future__ import annotations

import argparse
import json
import sys

from upath import UPath

from pipeline_assets.cli_custody import add_custody_commands
from pipeline_assets.lib.custody import CustodyError, verify_file
from pipeline_assets.lib.gex.cli import add_gex_commands
from pipeline_assets.lib.settings import Settings, SettingsError


def _demo(args: argparse.Namespace) -> int:
    from pipeline_assets.demo import main as demo_main

    return demo_main(Settings.from_env())


def _verify(args: argparse.Namespace) -> int:
    """Check files against their sidecars; exit 1 naming each one that does not match."""
    status = 0
    for name in args.files:
        try:
            record = verify_file(UPath(name))
        except CustodyError as exc:
            print(f"FAILED {exc}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps(record.model_dump(mode="json"), sort_keys=True))
        else:
            print(
                f"ok     {name}  sha256={record.file_sha256}  contract={record.contract_name}/{record.contract_version}"
            )
    return status


def _postgres_stop(args: argparse.Namespace) -> int:
    from pipeline_assets.lib.postgres import stop_embedded

    folder = Settings.from_env().postgres_dir
    print(
        f"stopped the embedded PostgreSQL in {folder}"
        if stop_embedded(folder)
        else f"no embedded PostgreSQL runs in {folder}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="generate demo sources, materialize every asset, run every check, print a summary",
    )
    demo.set_defaults(handler=_demo)

    verify = commands.add_parser(
        "verify", help="check files against their chain-of-custody sidecars"
    )
    verify.add_argument("files", nargs="+", help="data files (their sidecars are FILE.meta.json)")
    verify.add_argument("--json", action="store_true", help="print each verified sidecar as JSON")
    verify.set_defaults(handler=_verify)

    add_custody_commands(commands)
    add_gex_commands(commands)

    postgres = commands.add_parser("postgres", help="the embedded PostgreSQL under the data root")
    postgres_commands = postgres.add_subparsers(dest="postgres_command", required=True)
    stop = postgres_commands.add_parser(
        "stop", help="stop the embedded server (the next run starts it again)"
    )
    stop.set_defaults(handler=_postgres_stop)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SettingsError as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
