"""Command line: ``python -m loader COMMAND``.

Errors are one line on stderr with a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from . import settings
from .errors import LoaderError, UsageError
from .ids import validate_scan_id, validate_tenant_id


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _positive_int(text) if text != "0" else 0
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m loader", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="scan one tenant (or all) into raw_hubspot, then dbt build")
    who = run.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="tenant id (token from the tenants file or env)")
    who.add_argument("--all", action="store_true", help="every tenant in the tenants file")
    run.add_argument("--concurrency", type=_positive_int, default=1,
                     help="with --all: tenants scanned at once (default 1)")
    run.add_argument("--full-refresh", action="store_true",
                     help="re-read every deal via the list endpoint instead of searching changes")
    run.add_argument("--batch-size", type=_positive_int, default=settings.DEFAULT_BATCH_SIZE,
                     help="records per progress update / cancellation check (default 50)")
    run.add_argument("--lookback-seconds", type=_non_negative_int, default=300,
                     help="incremental re-read window for search-index lag (default 300)")
    run.add_argument("--no-stage-history", action="store_true",
                     help="skip dealstage history (halves list requests)")
    run.add_argument("--no-transform", action="store_true", help="do not run dbt after loading")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                     help="progress bar on stderr (default: when stderr is a terminal)")

    submit = sub.add_parser("submit", help="queue scans for a worker (python -m loader worker)")
    who = submit.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="tenant id (the worker resolves its token)")
    who.add_argument("--all", action="store_true", help="every tenant in the tenants file")
    submit.add_argument("--full-refresh", action="store_true",
                        help="re-read every deal via the list endpoint, not only changes")
    submit.add_argument("--batch-size", type=_positive_int, default=settings.DEFAULT_BATCH_SIZE,
                        help="records per progress update / cancellation check (default 50)")
    submit.add_argument("--lookback-seconds", type=_non_negative_int,
                        default=settings.DEFAULT_LOOKBACK_SECONDS,
                        help="incremental re-read window for search-index lag (default 300)")
    submit.add_argument("--no-stage-history", action="store_true",
                        help="skip dealstage history (halves list requests)")
    submit.add_argument("--wait", action="store_true",
                        help="wait until the scans have ended; exit 1 unless all completed")
    submit.add_argument("--timeout", type=_positive_float, default=None,
                        help="with --wait: give up waiting after this many seconds")
    submit.add_argument("--json", action="store_true", help="print the result as JSON")

    worker = sub.add_parser("worker", help="run queued scans and dbt builds, until stopped")
    worker.add_argument("--concurrency", type=_positive_int, default=2,
                        help="scans at once, each in its own process (default 2)")
    worker.add_argument("--every", type=_positive_float, default=None, metavar="SECONDS",
                        help="queue an incremental scan of every tenant of the tenants file "
                             "this often")
    worker.add_argument("--no-transform", action="store_true",
                        help="do not run dbt build after scans")
    worker.add_argument("--once", action="store_true",
                        help="run what is queued (and one --every round), build, then exit")
    worker.add_argument("--poll", type=_positive_float, default=5.0,
                        help="seconds between looks at the queue without a notification "
                             "(default 5)")
    worker.add_argument("--json", action="store_true", help="one JSON object per event")

    status = sub.add_parser("status", help="show one scan job")
    status.add_argument("scan_id", help="external scan id (or the job's internal id)")
    status.add_argument("--json", action="store_true", help="print the job as JSON")

    scans = sub.add_parser("scans", help="list scan jobs, newest first")
    scans.add_argument("--active", action="store_true", help="only pending/running scans")
    scans.add_argument("--tenant", help="only this tenant's scans")
    scans.add_argument("--limit", type=_positive_int, default=50,
                       help="at most this many jobs (default 50)")
    scans.add_argument("--json", action="store_true", help="print the jobs as JSON")

    cancel = sub.add_parser("cancel", help="cancel a pending/running scan")
    cancel.add_argument("scan_id", help="the scan id (as `scans` shows it)")

    transform = sub.add_parser("transform", help="run dbt build alone, same connection")
    transform.add_argument("--full-refresh", action="store_true",
                           help="rebuild incremental models from scratch")
    transform.add_argument("--select", nargs="+", help="dbt node selection")
    transform.add_argument("--on-worker", action="store_true",
                           help="have a running worker build (its dbt project is parsed "
                                "already) and wait for it")
    transform.add_argument("--timeout", type=_positive_float, default=None,
                           help="with --on-worker: give up waiting after this many seconds")
    transform.add_argument("--json", action="store_true",
                           help="with --on-worker: print the build's record as JSON")

    dbt = sub.add_parser("dbt", help="run any dbt command with the loader's connection",
                         add_help=False)
    dbt.add_argument("dbt_args", nargs=argparse.REMAINDER)

    dbc = sub.add_parser("db", help="the database in use")
    dbc.add_argument("action", choices=("url", "stop"),
                     help="url: print it (starting the embedded server); stop: stop embedded")

    sub.add_parser("sandbox", help="serve the HubSpot-compatible sandbox (see --help)",
                   add_help=False).add_argument("sandbox_args", nargs=argparse.REMAINDER)
    sub.add_parser("deals", help="tenant-scoped deal queries through RLS (see --help)",
                   add_help=False).add_argument("deals_args", nargs=argparse.REMAINDER)
    sub.add_parser("retention", help="archive old completed scan jobs (see --help)",
                   add_help=False).add_argument("retention_args", nargs=argparse.REMAINDER)

    lint = sub.add_parser("lint", help="sqlfluff lint the dbt project (dbt templater)")
    lint.add_argument("paths", nargs="*", default=["dbt_project"],
                      help="files or folders to lint (default dbt_project)")

    demo = sub.add_parser("demo", help="sandbox + two demo tenants + scans + dbt + summary")
    demo.add_argument("--deals", type=_positive_int, default=2000,
                      help="sandbox deals per demo tenant (default 2000)")
    demo.add_argument("--seed", type=int, default=42, help="sandbox data seed (default 42)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Pass-through commands keep their own argument parsing (each module's ``main(argv)``).
    if argv[:1] == ["sandbox"]:
        from .sandbox import main as sandbox_main

        return sandbox_main(argv[1:])
    if argv[:1] == ["deals"]:
        from .deals_cli import main as deals_main

        return _guarded(deals_main, argv[1:])
    if argv[:1] == ["retention"]:
        from .retention import main as retention_main

        return _guarded(retention_main, argv[1:])
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        return _dispatch(args)
    except LoaderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _guarded(entry: Any, argv: list[str]) -> int:
    """Run a sub-command's ``main(argv)`` with the CLI's one-line error handling."""
    try:
        return int(entry(argv))
    except LoaderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _dispatch(args: argparse.Namespace) -> int:
    handler = {
        "run": _cmd_run,
        "submit": _cmd_submit,
        "worker": _cmd_worker,
        "status": _cmd_status,
        "scans": _cmd_scans,
        "cancel": _cmd_cancel,
        "transform": _cmd_transform,
        "dbt": _cmd_dbt,
        "db": _cmd_db,
        "demo": _cmd_demo,
        "lint": _cmd_lint,
    }[args.command]
    return int(handler(args))


def _print_scan_results(results: Sequence[Any], *, as_json: bool) -> None:
    """Finished scans as JSON (without importing the terminal tables, rich: a script's call) or
    as the summary table."""
    if as_json:
        print(dumps([r.as_dict() for r in results]))
        return
    from .report import print_scan_results

    print_scan_results(results)


def _cmd_run(args: argparse.Namespace) -> int:
    # dbt's builder and the terminal tables (rich) are imported once the scans are done, and
    # only if needed: nothing the scans wait for (runner starts run --all's fork server first).
    from . import runner

    tenant_ids = _tenant_ids(args)
    if not args.no_transform:
        settings.rebuild_min_versions()  # a bad LOADER_REBUILD_MIN_VERSIONS fails before a scan
        settings.indexed_properties()  # and so does a bad LOADER_INDEXED_PROPERTIES
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    options = [
        runner.ScanOptions(
            tenant_id=t,
            full_refresh=args.full_refresh,
            batch_size=args.batch_size,
            lookback_seconds=args.lookback_seconds,
            stage_history=not args.no_stage_history,
            show_progress=show and not args.json,
        )
        for t in tenant_ids
    ]
    results = runner.run_many(options, concurrency=args.concurrency)
    _print_scan_results(results, as_json=args.json)
    if any(r.status == "completed" for r in results) and not args.no_transform:
        from . import transform

        # What the scans landed decides between a merge and a rebuild (as on the worker).
        landed = runner.landed_versions(results)
        rebuild = transform.rebuild_is_cheaper(landed)
        if rebuild:
            print(f"dbt: the scans landed {landed:,} deal versions: rebuilding the marts from the "
                  "raw history (--full-refresh), which costs less than merging them",
                  file=sys.stderr, flush=True)
        transform.build(quiet=args.json, full_refresh=rebuild, freeze_heap=True)
    return _report_failures(results)


def _report_failures(results: list[Any]) -> int:
    """One ``error:`` line per scan that did not complete; the exit code (1 if any)."""
    bad = [r for r in results if r.status != "completed"]
    for r in bad:
        if not r.scan_id:  # refused or skipped before a job existed; the message names it
            print(f"error: {r.error_message}", file=sys.stderr)
            continue
        print(f"error: scan {r.scan_id} for tenant {r.tenant_id} {r.status}: "
              f"{r.error_message or ''}".rstrip(": "), file=sys.stderr)
    return 1 if bad else 0


def _tenant_ids(args: argparse.Namespace) -> list[str]:
    """The tenants ``--tenant`` or ``--all`` names (validated)."""
    if args.all:
        from .tenants import load_tenants

        tenant_ids = list(load_tenants())
        if not tenant_ids:
            raise UsageError(f"--all: no tenants in {settings.tenants_file()}")
        return tenant_ids
    return [validate_tenant_id(args.tenant)]


def _cmd_submit(args: argparse.Namespace) -> int:
    from . import db, scan_jobs, worker
    from .runner import scan_results_from_jobs

    tenant_ids = _tenant_ids(args)
    options = worker.scan_options(full_refresh=args.full_refresh,
                                  lookback_seconds=args.lookback_seconds,
                                  stage_history=not args.no_stage_history)
    conn = db.connect(autocommit=True)
    try:
        scan_jobs.ensure_schema(conn)
        queued = [scan_jobs.enqueue(conn, t, options, args.batch_size) for t in tenant_ids]
        if not worker.any_worker_running(conn):
            print("warning: no worker is running on this database; the scans stay queued until "
                  "one starts: python -m loader worker", file=sys.stderr)
        if not args.wait:
            if args.json:
                print(dumps([{"tenant_id": q.job.tenant_id, "scan_id": q.job.scan_id,
                              "job_id": q.job.id, "queued": q.added} for q in queued]))
            else:
                for q in queued:
                    note = "queued" if q.added else "already queued"
                    print(f"{note}: scan {q.job.scan_id} for tenant {q.job.tenant_id}")
            return 0
        jobs = worker.wait_for_jobs(conn, [q.job.id for q in queued], timeout=args.timeout)
    finally:
        conn.close()
    results = scan_results_from_jobs(jobs)
    _print_scan_results(results, as_json=args.json)
    return _report_failures(results)


def _cmd_worker(args: argparse.Namespace) -> int:
    from .worker import Worker, WorkerOptions

    if not args.no_transform:
        settings.rebuild_min_versions()  # a bad LOADER_REBUILD_MIN_VERSIONS fails at the start
        settings.indexed_properties()  # and so does a bad LOADER_INDEXED_PROPERTIES
    options = WorkerOptions(concurrency=args.concurrency, every=args.every,
                            transform=not args.no_transform, once=args.once, poll=args.poll,
                            json=args.json)
    return Worker(options).run()


def _cmd_status(args: argparse.Namespace) -> int:
    from . import db, scan_jobs
    from .report import print_jobs

    scan_id = validate_scan_id(args.scan_id)
    conn = db.connect()
    try:
        scan_jobs.ensure_schema(conn)
        job = scan_jobs.get(conn, scan_id)
    finally:
        conn.close()
    print_jobs([job], as_json=args.json, single=True)
    return 0


def _cmd_scans(args: argparse.Namespace) -> int:
    from . import db, scan_jobs
    from .report import print_jobs

    tenant = validate_tenant_id(args.tenant) if args.tenant else None
    conn = db.connect()
    try:
        scan_jobs.ensure_schema(conn)
        jobs = scan_jobs.list_jobs(conn, active=args.active, tenant_id=tenant, limit=args.limit)
    finally:
        conn.close()
    print_jobs(jobs, as_json=args.json)
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    from . import db, scan_jobs

    scan_id = validate_scan_id(args.scan_id)
    conn = db.connect()
    try:
        scan_jobs.ensure_schema(conn)
        outcome = scan_jobs.cancel(conn, scan_id)
    finally:
        conn.close()
    if outcome.changed:
        print(f"scan {scan_id} cancelled at {outcome.processed_items} of "
              f"{outcome.total_items} deals; the running loader stops within one batch")
        return 0
    raise LoaderError(f"scan {scan_id} is already {outcome.status}; nothing changed")


def _cmd_transform(args: argparse.Namespace) -> int:
    from . import transform

    if not args.on_worker:
        if args.timeout is not None or args.json:
            raise UsageError("transform: --timeout and --json go with --on-worker")
        settings.indexed_properties()  # a bad LOADER_INDEXED_PROPERTIES: one line, no dbt
        transform.build(full_refresh=args.full_refresh, select=args.select, freeze_heap=True)
        return 0
    if args.select:
        raise UsageError("transform: --select cannot be used with --on-worker")
    from . import db, scan_jobs, worker

    conn = db.connect(autocommit=True)
    try:
        scan_jobs.ensure_schema(conn)
        if not worker.any_worker_running(conn, worker.BUILDER_LOCK):
            raise LoaderError("no worker that runs dbt builds is running on this database; "
                              "start one (python -m loader worker) or run transform without "
                              "--on-worker")
        build_id = transform.request_build(conn, full_refresh=args.full_refresh)
        build = worker.wait_for_build(conn, build_id, timeout=args.timeout)
    finally:
        conn.close()
    if args.json:
        print(dumps(build))
    elif build["status"] == "completed":
        kind = "full refresh" if build["full_refresh"] else "incremental"
        print(f"dbt build {build_id} ({kind}) on the worker: completed in "
              f"{float(build['seconds']):.1f} s, {build['nodes']} nodes")
    if build["status"] != "completed":
        raise LoaderError(f"dbt build {build_id} on the worker failed: "
                          f"{build['error_message'] or 'see the worker output'}")
    return 0


def _cmd_dbt(args: argparse.Namespace) -> int:
    from . import transform

    dbt_args = [a for a in args.dbt_args if a != "--"] or ["--help"]
    return transform.run_dbt(dbt_args)


def _cmd_db(args: argparse.Namespace) -> int:
    from . import db

    if args.action == "url":
        print(db.database_url())
    else:
        if settings.database_url_env():
            raise UsageError("DATABASE_URL is set: the embedded server is not in use")
        print("embedded PostgreSQL stopped" if db.stop_embedded() else "embedded PostgreSQL "
              "was not running")
    return 0


def _cmd_lint(args: argparse.Namespace) -> int:
    from . import db, transform

    # Against an empty database of its own, not the one in use: the high-water marks and the
    # integrity test render the scans and tenants they find as literals, so the SQL linted
    # would otherwise depend on the data loaded (a `make demo` made `make lint` fail).
    return transform.run_sqlfluff(["lint", *args.paths], db.embedded_url(db.LINT_DATABASE))


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(deals=args.deals, seed=args.seed)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def dumps(value: Any) -> str:
    """JSON for ``--json`` output (datetimes as ISO-8601)."""
    return json.dumps(value, default=_json_default, indent=2, ensure_ascii=False)
