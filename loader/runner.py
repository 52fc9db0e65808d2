"""Scanning many tenants: options, results, and the process pool that runs one scan per tenant.

Kept apart from :mod:`loader.scan` so that ``run --all`` does not import dlt (half a second) in
the process that only hands tenants to workers: the workers fork from a server that imported it.
That server is started before this process imports the database driver, so that its imports
begin as early as they can (they are what ``run --all`` waits for first).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import settings
from .errors import LoaderError

RAW_DATASET = "raw_hubspot"
#: What a fork server imports for the scan processes it forks (``run --all``, the worker): the
#: loader with dlt, and what dlt imports only on a scan's first run or load, so that no scan
#: process imports them again (each of four ``run --all`` scan processes imported about 155
#: modules in its first scan before the last two were added: dlt's ``requests`` helper with
#: ``requests``, ``chardet`` and ``idna``, which dlt's runtime set-up imports, and dlt's plugin
#: manager with ``pluggy``). Neither reads configuration when imported: dlt configures its
#: ``requests`` client when a pipeline's runtime starts, in the scan process. The first one
#: turns the garbage collector off while the others are imported (:mod:`loader.preload_start`),
#: the last one freezes what they made out of its way and turns it on again
#: (:mod:`loader.preload_done`).
FORKSERVER_PRELOAD = (
    "loader.preload_start",
    "loader.scan",
    "dlt.destinations.impl.postgres.postgres",
    "dlt.destinations.impl.postgres.sql_client",
    "pyarrow.compute",
    "pyarrow.csv",
    "pyarrow.parquet",
    "dlt.sources.helpers.requests",
    "dlt.common.configuration.plugins",
    "loader.preload_done",
)
#: ``error_message`` of a scan stopped by Ctrl-C in its own terminal.
CTRL_C_REASON = "Cancelled by user (Ctrl-C)"


@dataclass
class ScanOptions:
    """What to scan and how."""

    tenant_id: str
    full_refresh: bool = False
    batch_size: int = settings.DEFAULT_BATCH_SIZE
    lookback_seconds: int = settings.DEFAULT_LOOKBACK_SECONDS
    stage_history: bool = True
    api_base_url: str = field(default_factory=settings.api_base_url)
    show_progress: bool = False
    loader_file_format: str = "csv"


@dataclass
class ScanResult:
    """How a scan ended."""

    tenant_id: str
    scan_id: str
    job_id: str
    status: str
    mode: str
    processed_items: int
    failed_items: int
    total_items: int
    requests: int
    seconds: float
    error_message: str | None = None
    success_rate: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def landed_versions(results: Sequence[ScanResult]) -> int:
    """Deal versions these scans landed in ``raw_hubspot.deals`` that a build takes in: those of
    completed scans and the whole batches of cancelled ones (``processed_items``)."""
    return sum(r.processed_items for r in results if r.status in ("completed", "cancelled"))


def failed_result(options: ScanOptions, message: str) -> ScanResult:
    return ScanResult(options.tenant_id, "", "", "failed", "n/a", 0, 0, 0, 0, 0.0, message)


def skipped_result(options: ScanOptions, job_id: str, reason: str, *,
                   status: str = "skipped") -> ScanResult:
    """A queued scan a worker did not run: ``skipped`` (it was no longer queued) or ``busy``
    (another process is scanning the tenant: it stays queued)."""
    return ScanResult(options.tenant_id, "", job_id, status, "n/a", 0, 0, 0, 0, 0.0, reason)


def scan_results_from_jobs(jobs: Sequence[dict[str, Any]]) -> list[ScanResult]:
    """Scan results as ``run`` prints them, read from finished job records (``submit --wait``;
    the records do not keep how many requests a scan made: ``requests`` is None)."""
    results = []
    for job in jobs:
        started, completed = job.get("started_at"), job.get("completed_at")
        seconds = (completed - started).total_seconds() if started and completed else 0.0
        scan_type = str(job.get("scan_type") or "")
        results.append(ScanResult(
            tenant_id=job.get("organization_id") or "",
            scan_id=job["scan_id"],
            job_id=job["id"],
            status=job["status"],
            mode=scan_type.removeprefix("deals_") if scan_type != "deals_queued" else "n/a",
            processed_items=job["processed_items"],
            failed_items=job["failed_items"],
            total_items=job["total_items"],
            requests=None,  # type: ignore[arg-type]
            seconds=round(seconds, 3),
            error_message=job.get("error_message"),
            success_rate=job.get("success_rate"),
        ))
    return results


def run_many(options: list[ScanOptions], concurrency: int = 1) -> list[ScanResult]:
    """Scan several tenants, ``concurrency`` at a time, each in its own process and pipeline.

    Results come back in the order of ``options``. One tenant's failure (or crash) does not stop
    the others. When the raw tables do not exist yet, the first tenant runs alone so that
    concurrent pipelines never race to create them. With progress on, the parent process draws
    one bar per running tenant from the live job records.
    """
    if len(options) == 1:
        from .scan import run_scan

        return [run_scan(options[0])]
    context = start_fork_server() if concurrency > 1 else None
    from . import db

    url = db.database_url()
    if concurrency <= 1:
        results: list[ScanResult] = []
        for opt in options:
            if any(r.error_message == CTRL_C_REASON for r in results):  # Ctrl-C stops them all
                results.append(failed_result(
                    opt, f"tenant {opt.tenant_id}: not scanned: stopped by Ctrl-C"))
            else:
                results.append(_run_isolated(opt, url))
        return results
    from concurrent.futures import ProcessPoolExecutor

    show = any(o.show_progress for o in options)
    quiet = [ScanOptions(**{**o.__dict__, "show_progress": False}) for o in options]
    results: list[ScanResult] = []
    if not raw_tables_exist(url):
        results.append(_run_isolated(options[0], url))
        quiet = quiet[1:]
    board = None
    if show:
        from .report import JobBoard

        board = JobBoard(url, [o.tenant_id for o in quiet])
        board.start()
    try:
        with ProcessPoolExecutor(max_workers=concurrency, mp_context=context) as pool:
            environ = dict(os.environ)
            futures = [pool.submit(_in_worker, opt, url, environ) for opt in quiet]
            for opt, future in zip(quiet, futures, strict=True):
                try:
                    results.append(future.result())
                except Exception as exc:  # noqa: BLE001 - e.g. the worker process died
                    results.append(failed_result(
                        opt, f"tenant {opt.tenant_id}: scan process failed: "
                             f"{type(exc).__name__}: {one_line(exc)}"))
    finally:
        if board is not None:
            board.stop()
    return results


def start_fork_server() -> Any:
    """The ``forkserver`` context, its server started with :data:`FORKSERVER_PRELOAD` (``run
    --all``'s pool and the worker's scan processes fork from it).

    Workers fork from a server process that imported the loader (dlt included) once, instead of
    each importing it anew (spawn): seconds saved per run. The server forks from a clean,
    single-threaded state, unlike a plain fork of this process (threads, open connections). It
    starts first, so that its imports overlap with what this process does meanwhile."""
    import multiprocessing
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    forkserver.ensure_running()
    return context


def raw_tables_exist(url: str) -> bool:
    """Whether ``raw_hubspot.deals`` exists (a first scan creates the raw tables)."""
    from . import db

    conn = db.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("select to_regclass(%s) is not null", (f"{RAW_DATASET}.deals",))
            return bool(cur.fetchone()[0])
    finally:
        conn.close()


def _run_isolated(options: ScanOptions, url: str) -> ScanResult:
    from .scan import _run_scan_isolated

    return _run_scan_isolated(options, url)


def _in_worker(options: ScanOptions, url: str, environ: dict[str, str]) -> ScanResult:
    """A pool worker's entry point (a light module to unpickle; the scan module is preloaded in
    the fork server)."""
    from .scan import _run_scan_in_worker

    return _run_scan_in_worker(options, url, environ)


def one_line(exc: BaseException) -> str:
    """The most useful one-line message in an exception chain (ours, if any is ours)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, LoaderError):
            return str(current)
        nested = getattr(current, "exception", None)
        current = nested if isinstance(nested, BaseException) else (
            current.__cause__ or current.__context__
        )
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:500]
