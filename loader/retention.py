"""``python -m loader retention --days N [--dry-run]``: archive old completed scan jobs.

Runs the dbt operation ``archive_scan_jobs`` (dbt_project/macros/retention.sql): completed scan
jobs that finished more than N days ago, and that no current deal references, move from
``loader.scan_jobs`` to ``loader.scan_jobs_archive`` and leave ``analytics.scan_jobs``. Jobs that
current deals still reference stay (deleting them would cascade to live deals); raw rows stay.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from . import transform
from .errors import LoaderError, UsageError

RESULT_MARKER = "RETENTION_RESULT "


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m loader retention", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=_days, default=90,
                        help="archive completed jobs that finished more than N days ago (90)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the jobs that would be archived, change nothing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def archive(days: int, *, dry_run: bool = False, url: str | None = None) -> dict[str, Any]:
    """Run the dbt operation; return ``{"days", "dry_run", "jobs": [{id, scan_id, tenant,
    completed_at}]}`` (the jobs archived, or that would be with ``dry_run``)."""
    args = json.dumps({"days": days, "dry_run": dry_run})
    code, output = transform.run_dbt_captured(["run-operation", "archive_scan_jobs",
                                               "--args", args], url)
    for line in output.splitlines():
        _, marker, payload = line.partition(RESULT_MARKER)
        if marker:
            if code == 0:
                return dict(json.loads(payload))
            break
    last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "")
    raise LoaderError(f"retention failed (dbt exit {code}): {last[:300]}")


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    result = archive(args.days, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    jobs = result["jobs"]
    verb = "would archive" if args.dry_run else "archived"
    print(f"{verb} {len(jobs)} completed scan job(s) older than {args.days} days"
          + (" (dry run)" if args.dry_run else ""))
    for job in jobs:
        print(f"  {job['scan_id']}  tenant {job['tenant']}  completed {job['completed_at']}")
    return 0
