"""``plada catalog validate FILE`` and ``plada catalog publish FILE [--force] [--max-parallel N]``.

``flows/cli.py`` adds them to its parser (``add_catalog``, with its option generator, so ``--force`` and
``--max-parallel`` come from ``CatalogRequest`` like every other flag) and calls ``cmd_validate`` with the parsed
arguments and ``cmd_publish`` with the validated ``CatalogRequest``.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["add_catalog", "cmd_publish", "cmd_validate"]

COLUMNS = ("task", "status", "version", "payload_bytes", "predicted_acc", "measured_acc", "wall_s", "reason")


def add_catalog(sub, add_request_options: Callable) -> None:
    from flows.catalog import CatalogRequest

    catalog = sub.add_parser("catalog", help="a catalog of tasks (YAML): check it, publish every task")
    commands = catalog.add_subparsers(dest="catalog_command", required=True)
    file_help = CatalogRequest.model_fields["catalog"].description
    validate = commands.add_parser("validate", help="check every task of a catalog against the publish-task form")
    validate.add_argument("catalog", metavar="FILE", help=file_help)
    publish = commands.add_parser("publish", help="publish every task (unchanged ones train nothing) and summarise")
    publish.add_argument("catalog", metavar="FILE", help=file_help)
    add_request_options(publish, CatalogRequest, only={"force", "max_parallel"})


def cmd_validate(args) -> dict:
    from flows.catalog import load_catalog

    entries = load_catalog(args.catalog)  # a CatalogError (a ValueError) lists every problem
    return {"catalog": args.catalog, "valid": True, "tasks": [e.task for e in entries]}


def cmd_publish(request) -> None:
    """Print the summary table (tab-separated); a failed task ends the command with an error naming it."""
    from flows.catalog import FAILED, run_catalog

    rows = run_catalog(request)
    print("\t".join(COLUMNS))
    for row in rows:
        print("\t".join("" if row[c] is None else str(row[c]) for c in COLUMNS))
    failed = [f"{r['task']} ({r['reason']})" for r in rows if r["status"] == FAILED]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(rows)} tasks failed: " + "; ".join(failed))
