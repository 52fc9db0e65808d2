"""``python -m loader deals --tenant T [filters]``: the data-access layer's queries, as a table or
JSON. Every query runs through :mod:`loader.dal` (one transaction, tenant set, RLS).

Without an aggregate option it prints a page of deals (newest created first) and, when there is
more, the ``--after`` cursor of the next page.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import date
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import dal
from .errors import UsageError
from .ids import validate_scan_id, validate_tenant_id


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _property(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= dal.MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be 1..{dal.MAX_LIMIT}: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m loader deals",
                     description="Tenant-scoped deal queries (row-level security).")
    parser.add_argument("--tenant", required=True, help="tenant id (required)")
    parser.add_argument("--scan", help="only deals whose current version came from this scan id")
    parser.add_argument("--stage", help="only this dealstage id")
    parser.add_argument("--pipeline", help="only this pipeline id")
    parser.add_argument("--search", help="deal name contains TEXT (case-insensitive)")
    parser.add_argument("--closed-from", type=_date, metavar="YYYY-MM-DD",
                        help="closedate on or after")
    parser.add_argument("--closed-to", type=_date, metavar="YYYY-MM-DD", help="closedate before")
    parser.add_argument("--created-from", type=_date, metavar="YYYY-MM-DD",
                        help="createdate on or after")
    parser.add_argument("--created-to", type=_date, metavar="YYYY-MM-DD",
                        help="createdate before")
    parser.add_argument("--property", type=_property, action="append", default=[],
                        metavar="KEY=VALUE", help="properties ->> KEY = VALUE (repeatable)")
    parser.add_argument("--include-archived", action="store_true",
                        help="list archived deals too")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--by-stage", action="store_true", help="live deals per stage")
    group.add_argument("--by-pipeline-stage", action="store_true",
                       help="live deals per pipeline and stage (--pipeline to pick one)")
    group.add_argument("--closed-by-month", action="store_true",
                       help="live deals with a close date per month (--closed-from: since)")
    parser.add_argument("--limit", type=_limit, default=dal.DEFAULT_LIMIT,
                        help=f"deals per page (default {dal.DEFAULT_LIMIT})")
    parser.add_argument("--after", metavar="CURSOR", help="next page: the cursor a page ended with")
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    tenant = validate_tenant_id(args.tenant)
    scan = validate_scan_id(args.scan) if args.scan else None
    if (args.closed_from or args.closed_to) and (args.created_from or args.created_to):
        raise UsageError("use either --closed-from/--closed-to or --created-from/--created-to")
    with dal.DealReader(tenant) as reader:
        if args.by_stage:
            return _print_rows(reader.count_by_stage(), "deals by stage", args.json)
        if args.by_pipeline_stage:
            return _print_rows(reader.pipeline_stage_summary(args.pipeline),
                               "deals by pipeline and stage", args.json)
        if args.closed_by_month:
            return _print_rows(reader.closed_by_month(args.closed_from),
                               "closed deals by month", args.json)
        created = args.created_from or args.created_to
        filters = dal.DealFilter(
            scan_id=scan,
            stage=args.stage,
            pipeline=args.pipeline,
            search=args.search,
            date_field="createdate" if created else "closedate",
            date_from=args.created_from if created else args.closed_from,
            date_to=args.created_to if created else args.closed_to,
            properties=dict(args.property),
            include_archived=args.include_archived or scan is not None,
        )
        page = reader.deals(filters, limit=args.limit, after=args.after)
    if args.json:
        from .cli import dumps

        print(dumps({"tenant_id": tenant, "deals": page.rows, "next_cursor": page.next_cursor}))
        return 0
    _print_rows(page.rows, f"deals of {tenant}", False)
    if page.next_cursor:
        print(f"next page: --after {page.next_cursor}")
    return 0


def _print_rows(rows: list[dict[str, Any]], title: str, as_json: bool) -> int:
    if as_json:
        from .cli import dumps

        print(dumps(rows))
        return 0
    table = Table(title=f"{title} ({len(rows)})")
    columns = list(rows[0]) if rows else ["(no rows)"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else escape(str(v)) for v in row.values()))
    Console(soft_wrap=False, width=200).print(table)
    return 0
