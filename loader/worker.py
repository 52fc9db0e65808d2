"""``python -m loader worker``: a long-running process that runs queued scans and dbt builds.

Operators (or ``--every``) queue scans with ``python -m loader submit``: a ``pending`` job of
type ``deals_queued`` in ``loader.scan_jobs`` (:func:`scan_jobs.enqueue`). The worker listens on
the table's channel, hands each queued scan to one of ``--concurrency`` scan processes, and once
the scans it started have finished, runs an incremental ``dbt build`` in its own process. What a
``run`` pays on every invocation is paid once here: the scan processes keep the loader, dlt and
their tenants' pipelines imported and open, and the dbt project stays parsed (see README,
"Worker"). Everything else is as with ``run``: one scan per tenant at a time (the tenant's lock),
progress, cancel (``python -m loader cancel`` works on queued and running scans) and status in
``loader.scan_jobs``.

A worker that dies leaves its running scans to be marked interrupted by the tenant's next scan,
as with ``run``; queued scans stay queued for the next worker. Several workers may share one
database: a scan goes to whichever claims it first.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from . import db, scan_jobs, settings
from .errors import LoaderError
from .runner import (
    ScanResult,
    landed_versions,
    one_line,
    raw_tables_exist,
    start_fork_server,
)

if TYPE_CHECKING:  # the pool is imported when a worker starts, not by submit --wait
    from concurrent.futures import Future, ProcessPoolExecutor

logger = logging.getLogger(__name__)

#: The advisory lock every worker holds (shared) while it runs: ``submit`` tells by it whether
#: any worker is there to take its scans.
WORKER_LOCK = "hubspot-loader:worker"
#: Held (shared) by the workers that run dbt builds (not ``--no-transform``): ``transform
#: --on-worker`` needs one.
BUILDER_LOCK = "hubspot-loader:worker:transform"

#: A tenant another process was scanning is tried again after this many seconds.
BUSY_RETRY_SECONDS = 5.0

def any_worker_running(conn: Any, lock: str = WORKER_LOCK) -> bool:
    """Whether some ``python -m loader worker`` holds ``lock`` (:data:`WORKER_LOCK`, or
    :data:`BUILDER_LOCK` for one that builds) on this database."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "select exists (select from pg_locks where locktype = 'advisory' and objsubid = 1 "
            "and granted and ((classid::int8 << 32) | objid::int8) = hashtextextended(%s, 0))",
            (lock,),
        )
        return bool(cur.fetchone()[0])


@dataclass
class WorkerOptions:
    """How the worker runs."""

    concurrency: int = 2
    #: Queue an incremental scan of every tenant of the tenants file this often (None: never).
    every: float | None = None
    transform: bool = True
    #: Run what is queued (and one round of ``every``), build, and exit.
    once: bool = False
    #: Seconds between looks at the queue when no notification arrives.
    poll: float = 5.0
    json: bool = False


class Worker:
    """The worker's main loop (see the module docstring)."""

    def __init__(self, options: WorkerOptions, out: TextIO | None = None) -> None:
        self.options = options
        self.out = out or sys.stdout
        self.url = db.database_url()
        self.stopping = 0  # signals received: 1 = finish running scans, 2 = cancel them
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._running: dict[Future[ScanResult], dict[str, Any]] = {}
        self._busy_until: dict[str, float] = {}
        self._reported_busy: set[str] = set()
        self._raw_tables_seen = False
        self._build_due = False
        #: Raw deal versions the scans landed since the last build (what its merge would take).
        self._landed = 0
        self._next_round = time.monotonic()
        self._builder: Any = None

    # -- output --------------------------------------------------------------------------------

    def emit(self, event: str, text: str, **fields: Any) -> None:
        """One line per event: text, or a JSON object with ``--json``."""
        if self.options.json:
            line = json.dumps({"event": event, **fields}, default=str)
        else:
            line = f"worker: {text}"
        print(line, file=self.out, flush=True)

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (SIGINT/SIGTERM) or, with ``once``, until the queue is empty."""
        conn = db.connect(self.url, autocommit=True)
        scan_jobs.ensure_schema(conn)
        from .transform import BUILDS_CHANNEL

        with conn.cursor() as cur:
            for lock in (WORKER_LOCK, *((BUILDER_LOCK,) if self.options.transform else ())):
                cur.execute("select pg_advisory_lock_shared(hashtextextended(%s, 0))", (lock,))
            cur.execute(f"listen {scan_jobs.NOTIFY_CHANNEL}")
            cur.execute(f"listen {BUILDS_CHANNEL}")
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        pool = self._start_pool()
        try:
            self._ready(conn)
            while True:
                self._collect_finished(conn)
                if self.stopping == 0:
                    self._queue_round(conn)
                    self._dispatch(conn, pool)
                if not self._running and self.options.transform and self.stopping < 2:
                    self._run_builds(conn)
                if not self._running and (self.stopping or (
                        self.options.once and not self._has_work(conn))):
                    break
                self._wait(conn)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            pool.shutdown(wait=True, cancel_futures=True)
            conn.close()
        self.emit("stopped", "stopped")
        return 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping += 1
        if self.stopping == 1:
            print("worker: stopping after the running scans (again to cancel them)",
                  file=sys.stderr, flush=True)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _start_pool(self) -> ProcessPoolExecutor:
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=self.options.concurrency,
                                   mp_context=start_fork_server(),
                                   initializer=_ignore_sigint)

    def _ready(self, conn: Any) -> None:
        parsed = 0.0
        if self.options.transform:
            from .transform import Builder

            self._builder = Builder(self.url, freeze_heap=True)
            parsed = self._builder.prepare()
        queued = len(scan_jobs.queued(conn))
        self.emit("ready", f"ready: {self.options.concurrency} scan processes, dbt project "
                  f"parsed in {parsed:.1f} s, {queued} scan(s) queued",
                  concurrency=self.options.concurrency, dbt_parse_seconds=round(parsed, 3),
                  queued=queued, pid=os.getpid())

    def _has_work(self, conn: Any) -> bool:
        from .transform import pending_builds

        return bool(self._running or self._build_due or scan_jobs.queued(conn, limit=1)
                    or (self.options.transform and pending_builds(conn)))

    def _queue_round(self, conn: Any) -> None:
        """With ``every``: queue an incremental scan of every tenant when a round is due."""
        if self.options.every is None or time.monotonic() < self._next_round:
            return
        from .tenants import load_tenants

        self._next_round = (float("inf") if self.options.once
                            else time.monotonic() + self.options.every)
        added = []
        for tenant_id in load_tenants():
            if scan_jobs.list_jobs(conn, active=True, tenant_id=tenant_id, limit=1):
                continue  # queued or running already
            queued = scan_jobs.enqueue(conn, tenant_id, scan_options(),
                                       settings.DEFAULT_BATCH_SIZE)
            added.append(queued.job.scan_id)
        self.emit("round", f"queued {len(added)} scan(s) (every {self.options.every:g} s)",
                  queued=added)

    def _dispatch(self, conn: Any, pool: ProcessPoolExecutor) -> None:
        free = self.options.concurrency - len(self._running)
        if not self._raw_tables_seen:
            # As run --all: while the raw tables do not exist, one scan at a time, so that
            # concurrent pipelines never race to create them.
            self._raw_tables_seen = raw_tables_exist(self.url)
            if not self._raw_tables_seen:
                free = min(free, 1 - len(self._running))
        if free <= 0:
            return
        now = time.monotonic()
        skip = {job["organization_id"] for job in self._running.values()}
        skip |= {t for t, until in self._busy_until.items() if until > now}
        environ = dict(os.environ)
        for job in scan_jobs.queued(conn, exclude_tenants=sorted(skip), limit=free):
            future = pool.submit(_run_queued, job["id"], self.url, environ)
            future.add_done_callback(lambda _: self._wake())
            self._running[future] = job
            self.emit("started", f"scan {job['scan_id']} started (tenant "
                      f"{job['organization_id']})", scan_id=job["scan_id"],
                      tenant_id=job["organization_id"])

    def _collect_finished(self, conn: Any) -> None:
        if self.stopping >= 2:
            self._cancel_running(conn)
        for future in [f for f in self._running if f.done()]:
            job = self._running.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - e.g. the scan process died
                message = (f"tenant {job['organization_id']}: scan process failed: "
                           f"{type(exc).__name__}: {one_line(exc)}")
                scan_jobs.finish(conn, scan_jobs.ScanJob(job["id"], job["scan_id"],
                                                         job["organization_id"]),
                                 "failed", message)
                result = ScanResult(job["organization_id"], job["scan_id"], job["id"], "failed",
                                    "n/a", 0, 0, 0, 0, 0.0, message)
            if result.status == "busy":
                self._busy_until[result.tenant_id] = time.monotonic() + BUSY_RETRY_SECONDS
                if job["id"] not in self._reported_busy:
                    self._reported_busy.add(job["id"])
                    self.emit("busy", f"scan {job['scan_id']} waits: {result.error_message}",
                              scan_id=job["scan_id"], tenant_id=result.tenant_id,
                              reason=result.error_message)
                continue
            self._landed += landed_versions([result])
            if result.status == "completed" and self.options.transform:
                self._build_due = True
            self.emit("scan", _scan_line(result, job), **result.as_dict())

    def _cancel_running(self, conn: Any) -> None:
        for job in self._running.values():
            if not job.get("cancel_sent"):
                scan_jobs.cancel(conn, job["scan_id"])
                job["cancel_sent"] = True

    def _run_builds(self, conn: Any) -> None:
        """The builds requested from this worker (``transform --on-worker``), then one after
        the scans that completed since the last build, if no requested build came after them."""
        from .transform import claim_build, rebuild_is_cheaper

        while self.stopping < 2:
            request = claim_build(conn)
            if request is None:
                break
            self._build(full_refresh=request["full_refresh"], requested_by="request",
                        build_id=request["id"])
        if self._build_due:
            # After scans that re-landed much of the warehouse (a full-refresh scan of every
            # tenant, say), rebuilding from the raw history is cheaper than merging.
            self._build(requested_by="worker",
                        full_refresh=rebuild_is_cheaper(self._landed, self.url))

    def _build(self, *, full_refresh: bool = False, requested_by: str,
               build_id: str | None = None) -> None:
        result = self._builder.build(full_refresh=full_refresh, quiet=True,
                                     requested_by=requested_by, build_id=build_id)
        landed, self._landed = self._landed, (0 if result.ok else self._landed)
        if result.ok:
            self._build_due = False
        elif requested_by == "worker":
            self._build_due = False  # not again until new scans land: the failure is reported
        kind = "full refresh" if full_refresh else "incremental"
        if full_refresh and requested_by == "worker":
            kind += f": the scans since the last build landed {landed:,} deal versions"
        what = "views left as they were" if result.views_skipped else "views rebuilt"
        text = (f"dbt build ({kind}) ok in {result.seconds:.1f} s ({result.nodes} nodes, "
                f"{what})" if result.ok else
                f"dbt build ({kind}) failed after {result.seconds:.1f} s: {result.error}")
        slowest = dict(list(result.timings.items())[:8])  # node -> seconds, slowest first
        self.emit("build", text, requested_by=requested_by, slowest=slowest,
                  landed_versions=landed, **result.as_dict())

    def _on_notify(self, payload: str) -> None:
        tenant = _tenant_freed(payload)
        if tenant is not None:
            self._busy_until.pop(tenant, None)  # a scan of it ended: try its queued one now

    def _wait(self, conn: Any) -> None:
        """Until a notification, a finished scan, a signal, or the next due time.

        Notifications that arrived while the loop ran its queries on ``conn`` are already read
        off the socket (psycopg2 collects them in ``conn.notifies`` with each query's result):
        with any there, it does not wait at all. Otherwise a scan queued during a query would
        wait for the next poll (``--poll``, 5 s)."""
        timeout = self.options.poll
        if self.options.every is not None and not self.options.once:
            timeout = min(timeout, max(0.0, self._next_round - time.monotonic()))
        if self._busy_until:
            soonest = min(self._busy_until.values()) - time.monotonic()
            timeout = min(timeout, max(0.05, soonest))
        if conn.notifies:
            timeout = 0.0
        try:
            ready, _, _ = select.select([conn, self._wake_r], [], [], timeout)
        except InterruptedError:
            ready = []
        if self._wake_r in ready:
            os.read(self._wake_r, 4096)
        if conn in ready:
            conn.poll()
        for notify in conn.notifies:
            self._on_notify(notify.payload)
        conn.notifies.clear()
        now = time.monotonic()
        self._busy_until = {t: u for t, u in self._busy_until.items() if u > now}


def _tenant_freed(payload: str) -> str | None:
    """The tenant whose scan a notification says has ended (its lock is free), if any."""
    try:
        change = json.loads(payload)
    except ValueError:
        return None
    if change.get("status") in scan_jobs.TERMINAL:
        return change.get("tenant_id")
    return None


def scan_options(*, full_refresh: bool = False,
                 lookback_seconds: int = settings.DEFAULT_LOOKBACK_SECONDS,
                 stage_history: bool = True) -> dict[str, Any]:
    """The options a queued scan runs with (what ``run`` takes from its command line; the batch
    size is the job's own column)."""
    return {
        "full_refresh": full_refresh,
        "lookback_seconds": lookback_seconds,
        "stage_history": stage_history,
    }


def _scan_line(result: ScanResult, job: dict[str, Any]) -> str:
    text = (f"scan {result.scan_id or job['scan_id']} (tenant {result.tenant_id}) "
            f"{result.status}")
    if result.status == "completed":
        return (f"{text}: {result.mode}, {result.processed_items:,} deals, "
                f"{result.requests} requests, {result.seconds:.2f} s")
    return f"{text}: {result.error_message or ''}".rstrip(": ")


def _ignore_sigint() -> None:
    """Scan processes share the worker's terminal: Ctrl-C there reaches them too. An idle one
    ignores it; a scanning one cancels its scan at the next batch (as ``run`` does), through the
    handler the scan installs while it runs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_queued(job_id: str, url: str, environ: dict[str, str]) -> ScanResult:
    """A scan process's entry point: the queued scan under the worker's environment
    (:func:`loader.scan.enter_scan_process`)."""
    from .scan import enter_scan_process, run_queued_scan

    enter_scan_process(environ)
    return run_queued_scan(job_id, url)


#: Seconds between checks when no notification comes (a safety net: every change notifies).
RECHECK_SECONDS = 1.0


def _wait_on(conn: Any, channel: str, check: Callable[[], Any], *, timeout: float | None,
             timed_out: Callable[[], str], recheck: float | None = RECHECK_SECONDS) -> Any:
    """Call ``check`` until it returns something other than None, waking when ``channel`` is
    notified (``conn`` in autocommit) or every ``recheck`` seconds (None: only when notified);
    returns that. Raises :class:`LoaderError` with ``timed_out()`` once ``timeout`` seconds
    have passed.

    ``check`` queries on ``conn``, and psycopg2 collects the notifications that arrive meanwhile
    in ``conn.notifies`` (they are off the socket then, and would not wake ``select``): those
    make it check again at once. Without that, a job that ended during a check was seen only at
    the next recheck: ``submit --wait`` exited up to a second late."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with conn.cursor() as cur:
        cur.execute(f"listen {channel}")
    try:
        while True:
            conn.notifies.clear()  # from here on, a notification means: check again
            result = check()
            if result is not None:
                return result
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise LoaderError(timed_out())
            if conn.notifies:
                continue  # notified while checking
            waits = [w for w in (recheck, left) if w is not None]
            select.select([conn], [], [], min(waits) if waits else None)
            conn.poll()
    finally:
        with conn.cursor() as cur:
            cur.execute(f"unlisten {channel}")


def wait_for_jobs(conn: Any, job_ids: list[str], *, timeout: float | None = None,
                  on_change: Callable[[list[dict[str, Any]]], None] | None = None
                  ) -> list[dict[str, Any]]:
    """Wait until every job of ``job_ids`` has ended; returns them (in order). Listens on the
    table's channel (``conn`` in autocommit); raises :class:`LoaderError` after ``timeout``."""
    jobs: list[dict[str, Any]] = []

    def check() -> list[dict[str, Any]] | None:
        jobs[:] = scan_jobs.get_many(conn, job_ids)
        if on_change is not None:
            on_change(jobs)
        return jobs if all(job["status"] in scan_jobs.TERMINAL for job in jobs) else None

    def timed_out() -> str:
        waiting = [j["scan_id"] for j in jobs if j["status"] not in scan_jobs.TERMINAL]
        return (f"timed out after {timeout:g} s waiting for {', '.join(waiting)}; "
                f"they go on (see python -m loader scans)")

    return list(_wait_on(conn, scan_jobs.NOTIFY_CHANNEL, check, timeout=timeout,
                         timed_out=timed_out))


def wait_for_build(conn: Any, build_id: str, *, timeout: float | None = None) -> dict[str, Any]:
    """Wait until the requested build ``build_id`` has ended; returns its row. Raises
    :class:`LoaderError` after ``timeout``, or if no building worker is left to run it."""
    from .transform import BUILDS_CHANNEL, get_build

    def check() -> dict[str, Any] | None:
        build = get_build(conn, build_id)
        if build["status"] in ("completed", "failed"):
            return build
        if not any_worker_running(conn, BUILDER_LOCK):
            raise LoaderError(f"no worker that runs dbt builds is left to run build "
                              f"{build_id}; it stays queued for the next one")
        return None

    return dict(_wait_on(conn, BUILDS_CHANNEL, check, timeout=timeout, timed_out=lambda: (
        f"timed out after {timeout:g} s waiting for dbt build {build_id}; it goes on "
        f"(see loader.dbt_builds)")))
