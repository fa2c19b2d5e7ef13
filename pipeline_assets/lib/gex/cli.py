"""`pipeline gex ...`: enqueue, import, serve, correct, retention, jobs, backup (no Dagster).

Each command reads the same settings as the code location (`Settings.from_env`) and prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipeline_assets.lib.gex.imports import GexConfig, GexImporter
from pipeline_assets.lib.gex.store import FAILED, GexInputError
from pipeline_assets.lib.settings import Settings


def importer_from_env(log: Any = None) -> GexImporter:
    settings = Settings.from_env()
    return GexImporter(settings.data_root, GexConfig.from_settings(settings), log=log)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _print(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=True))


def _enqueue(args: argparse.Namespace) -> int:
    job = importer_from_env(_stderr).enqueue(args.url, args.ticker, args.endpoint)
    _print(job.as_json())
    return 1 if job.status == FAILED else 0


def _import(args: argparse.Namespace) -> int:
    importer = importer_from_env(_stderr)
    if args.backup:
        importer.backup_databases()
    if args.job_ids:
        jobs = importer.fail_abandoned_jobs()
        jobs += [importer.import_job(i) for i in args.job_ids if i not in {j.id for j in jobs}]
    else:
        jobs = importer.import_pending()  # fails the abandoned jobs first too
    for job in jobs:
        _print(job.as_json())
    return 1 if any(j.status == FAILED for j in jobs) else 0


def _backup(args: argparse.Namespace) -> int:
    backup = importer_from_env(_stderr).backup_databases()
    _print({"backup": backup.copies, "removed": backup.removed})
    return 0


def _correct(args: argparse.Namespace) -> int:
    job = importer_from_env(_stderr).correct(args.job_id, args.url, args.reason)
    _print(job.as_json())
    return 1 if job.status == FAILED else 0


def _retention(args: argparse.Namespace) -> int:
    report = importer_from_env(_stderr).retention()
    _print({"removed": report.removed, "archived": report.archived, "kept": report.kept})
    return 0


def _jobs(args: argparse.Namespace) -> int:
    importer = importer_from_env()
    if args.history is not None:
        for event in importer.store.history(args.history):
            _print(event)
        return 0
    for job in importer.store.jobs(status=args.status):
        _print(job.as_json())
    return 0


def _serve(args: argparse.Namespace) -> int:
    from pipeline_assets.lib.gex.server import PATH, make_server

    server = make_server(importer_from_env(_stderr), args.host, args.port)
    host, port = server.server_address[:2]
    _stderr(f"serving POST http://{host}:{port}{PATH} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _guarded(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except GexInputError as exc:
            _stderr(f"pipeline gex: {exc}")
            return 2

    return run


def add_gex_commands(commands: Any) -> None:
    """Register `pipeline gex ...` on the `pipeline` parser's subcommands."""
    gex = commands.add_parser(
        "gex", help="GEX imports: enqueue, import, serve, correct, retention, jobs, backup"
    )
    sub = gex.add_subparsers(dest="gex_command", required=True)

    enqueue = sub.add_parser(
        "enqueue", help="record an import job for URL, stage its file, print the job (with skipped)"
    )
    enqueue.add_argument("url", help="http(s):// or file:// URL of a gexbot JSON file")
    enqueue.add_argument("--ticker", required=True, help="ticker folder, e.g. SPX or NQ_NDX")
    enqueue.add_argument(
        "--endpoint", required=True, help="endpoint folder, e.g. gex_zero, gex_zero_majors"
    )
    enqueue.set_defaults(handler=_guarded(_enqueue))

    imp = sub.add_parser(
        "import",
        help=(
            "fail abandoned jobs (pending, never staged), then import the pending jobs (or the "
            "given ones) through the same code as the sensor"
        ),
    )
    imp.add_argument("job_ids", nargs="*", type=int, help="job ids (default: every pending job)")
    imp.add_argument(
        "--backup",
        action="store_true",
        help="snapshot gex_history.db and gex_data.db first (before a mass import)",
    )
    imp.set_defaults(handler=_guarded(_import))

    backup = sub.add_parser(
        "backup", help="snapshot gex_history.db and gex_data.db into backups/gex/<UTC time>/"
    )
    backup.set_defaults(handler=_guarded(_backup))

    serve = sub.add_parser("serve", help="serve POST /gex_history_url")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: loopback only)"
    )
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    serve.set_defaults(handler=_guarded(_serve))

    correct = sub.add_parser(
        "correct", help="file a correction of a job: a new job that references it"
    )
    correct.add_argument("job_id", type=int, help="the job being corrected")
    correct.add_argument("url", help="URL of the corrected file")
    correct.add_argument("--reason", required=True, help="why (recorded in the job history)")
    correct.set_defaults(handler=_guarded(_correct))

    retention = sub.add_parser(
        "retention", help="remove old staged files now (what the daily schedule runs)"
    )
    retention.set_defaults(handler=_guarded(_retention))

    jobs = sub.add_parser("jobs", help="list the jobs, or one job's history")
    jobs.add_argument("--status", help="only jobs with this status")
    jobs.add_argument(
        "--history", type=int, metavar="JOB_ID", help="print the job's history instead"
    )
    jobs.set_defaults(handler=_guarded(_jobs))
