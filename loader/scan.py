"""One tenant's scan: job record, advisory lock, dlt pipeline run, status, progress."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dlt
import psycopg2.extensions
from dlt.extract.state import reset_resource_state
from dlt.pipeline.exceptions import PipelineStepFailed

from . import db, scan_jobs, settings, tenants
from .errors import LoaderError
from .hubspot import SOURCE_NAME, hubspot_deals
from .hubspot.helpers import HubSpotClient
from .hubspot.pacer import RequestPacer
from .hubspot.settings import DEFAULT_LOOKBACK_SECONDS
from .known_stages import stage_lookup

logger = logging.getLogger(__name__)

RAW_DATASET = "raw_hubspot"


@dataclass
class ScanOptions:
    """What to scan and how."""

    tenant_id: str
    full_refresh: bool = False
    batch_size: int = settings.DEFAULT_BATCH_SIZE
    lookback_seconds: int = DEFAULT_LOOKBACK_SECONDS
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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class JobProgress:
    """Writes progress to the live job every ``batch_size`` records; notices cancellation."""

    def __init__(
        self,
        conn: psycopg2.extensions.connection,
        job: scan_jobs.ScanJob,
        batch_size: int,
        show: bool,
    ) -> None:
        self.conn, self.job, self.batch_size = conn, job, batch_size
        self.processed = self.failed = self.total = 0
        self._unreported = 0
        self.cancelled = False
        self._bar: Any = None
        if show:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )

            class _Rate(TextColumn):
                def __init__(self) -> None:
                    super().__init__("")

                def render(self, task):  # type: ignore[no-untyped-def]
                    from rich.text import Text

                    speed = task.finished_speed or task.speed
                    return Text(f"{speed:,.0f} deals/s" if speed else "")

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                _Rate(),
                TimeRemainingColumn(),
                transient=False,
                console=None,
            )
            self._task = self._bar.add_task(f"{job.tenant_id}: deals", total=None)
            self._bar.start()

    def on_total(self, total: int) -> None:
        self.total = max(self.total, total)
        scan_jobs.set_total(self.conn, self.job, self.total)
        if self._bar is not None:
            self._bar.update(self._task, total=self.total)

    def on_batch(self, processed: int, failed: int) -> bool:
        self.processed += processed
        self.failed += failed
        self._unreported += processed + failed
        if self._bar is not None:
            self._bar.update(self._task, completed=self.processed + self.failed,
                             total=max(self.total, self.processed + self.failed) or None)
        if self._unreported >= self.batch_size:
            self.flush()
        return not self.cancelled

    def flush(self) -> None:
        self._unreported = 0
        status = scan_jobs.set_progress(self.conn, self.job, self.processed, self.failed)
        if status == "cancelled":
            self.cancelled = True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _lock_key(tenant_id: str) -> str:
    return f"hubspot-loader:scan:{tenant_id}"


def acquire_tenant_lock(url: str, tenant_id: str) -> psycopg2.extensions.connection:
    """Hold the tenant's scan lock on a dedicated session, or refuse naming the running scan."""
    conn = db.connect(url, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("select pg_try_advisory_lock(hashtext(%s))", (_lock_key(tenant_id),))
        (locked,) = cur.fetchone()
    if not locked:
        running = scan_jobs.list_jobs(conn, active=True, tenant_id=tenant_id, limit=1)
        conn.close()
        name = running[0]["scan_id"] if running else "(starting)"
        raise LoaderError(
            f"tenant {tenant_id} already has a running scan {name}; "
            f"wait for it or cancel it with: python -m loader cancel {name}"
        )
    return conn


def make_pipeline(tenant_id: str, url: str) -> dlt.Pipeline:
    """The tenant's own dlt pipeline (own state and working folder), loading into raw_hubspot."""
    return dlt.pipeline(
        pipeline_name=f"hubspot_{tenant_id}",
        pipelines_dir=str(settings.loader_home() / "dlt"),
        destination=dlt.destinations.postgres(credentials=_dlt_credentials(url)),
        dataset_name=RAW_DATASET,
    )


def _dlt_credentials(url: str) -> Any:
    """dlt's credentials for ``url`` (which may name a Unix socket directory as host)."""
    from dlt.destinations.impl.postgres.configuration import PostgresCredentials

    params = db.connection_params(url)
    credentials = PostgresCredentials()
    credentials.drivername = "postgresql"
    if params.host.startswith("/"):  # a socket directory: libpq takes it from the query
        credentials.host = "localhost"
        credentials.query = {"host": params.host}
    else:
        credentials.host = params.host
    credentials.port = params.port
    credentials.username = params.user
    credentials.password = params.password or None
    credentials.database = params.dbname
    credentials.resolve()
    return credentials


def run_scan(options: ScanOptions, url: str | None = None) -> ScanResult:
    """Run one tenant's scan end to end (without dbt); raises nothing for scan failures —
    they end the job ``failed`` and come back in the result."""
    tenant = tenants.resolve(options.tenant_id)
    token = tenant.access_token()
    url = url or db.database_url()
    conn = db.connect(url)
    scan_jobs.ensure_schema(conn)
    lock = acquire_tenant_lock(url, tenant.id)
    started = time.monotonic()
    try:
        interrupted = scan_jobs.fail_interrupted(conn, tenant.id)
        for scan_id in interrupted:
            logger.warning("tenant %s: scan %s was interrupted; marked failed", tenant.id, scan_id)
        pipeline = make_pipeline(tenant.id, url)
        full = options.full_refresh or not _has_completed_full(pipeline)
        mode = "full" if full else "incremental"
        config = {
            "tenant_id": tenant.id,
            "api_base_url": options.api_base_url,
            "mode": mode,
            "batch_size": options.batch_size,
            "lookback_seconds": options.lookback_seconds,
            "stage_history": options.stage_history,
            "token_source": tenant.token_source,
            "resumed_after": interrupted,
        }
        job = scan_jobs.create(conn, tenant.id, f"deals_{mode}", config, options.batch_size)
        scan_jobs.mark_running(conn, job)
        progress = JobProgress(conn, job, options.batch_size, options.show_progress)
        client = HubSpotClient(options.api_base_url, token, tenant.id, pacer=RequestPacer())
        error: str | None = None
        try:
            if options.full_refresh:
                _reset_deals_cursor(pipeline)
            source = hubspot_deals(
                client=client,
                tenant_id=tenant.id,
                scan_id=job.scan_id,
                scan_job_id=job.id,
                full_refresh=options.full_refresh,
                lookback_seconds=options.lookback_seconds,
                stage_history=options.stage_history,
                progress=progress,
                scan_started_at=datetime.now(UTC),
                batch_size=options.batch_size,
                known_stages=stage_lookup(url, tenant.id),
            )
            pipeline.run(source, loader_file_format=options.loader_file_format)
        except (PipelineStepFailed, LoaderError) as exc:
            error = _one_line(exc)
        finally:
            progress.close()
        progress.flush()
        if error is not None:
            status = scan_jobs.finish(conn, job, "failed", error)
        elif progress.cancelled:
            status = scan_jobs.finish(conn, job, "cancelled", "Cancelled by user")
        else:
            status = scan_jobs.finish(conn, job, "completed")
        final = scan_jobs.get(conn, job.scan_id)
        return ScanResult(
            tenant_id=tenant.id,
            scan_id=job.scan_id,
            job_id=job.id,
            status=status,
            mode=mode,
            processed_items=final["processed_items"],
            failed_items=final["failed_items"],
            total_items=final["total_items"],
            requests=client.pacer.requests_sent,
            seconds=round(time.monotonic() - started, 3),
            error_message=final["error_message"],
        )
    finally:
        lock.close()
        conn.close()


def _has_completed_full(pipeline: dlt.Pipeline) -> bool:
    """Whether this tenant's pipeline state records a completed full scan (the cursor is valid)."""
    try:
        pipeline.sync_destination()
    except Exception:  # noqa: BLE001 - first run: nothing to sync yet
        pass
    state = pipeline.state.get("sources", {}).get(SOURCE_NAME, {})
    return bool(state.get("resources", {}).get("deals", {}).get("full_scan_completed"))


def _reset_deals_cursor(pipeline: dlt.Pipeline) -> None:
    """Forget the deals cursor so a full refresh re-reads (and re-stamps) every deal."""
    if SOURCE_NAME not in pipeline.state.get("sources", {}):
        return  # nothing stored yet: the scan is a full one anyway
    # The changed state is committed with the scan's data (the resource writes to it too).
    with pipeline.managed_state() as state:
        reset_resource_state("deals", state["sources"][SOURCE_NAME])


def _one_line(exc: BaseException) -> str:
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


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def _run_scan_isolated(options: ScanOptions) -> ScanResult:
    """Worker-process entry: a scan whose unexpected crash still comes back as a result."""
    try:
        return run_scan(options)
    except LoaderError as exc:
        return ScanResult(options.tenant_id, "", "", "failed", "n/a", 0, 0, 0, 0, 0.0, str(exc))


def run_many(options: list[ScanOptions], concurrency: int = 1) -> list[ScanResult]:
    """Scan several tenants, ``concurrency`` at a time, each in its own process and pipeline.

    One tenant's failure does not stop the others. When the raw tables do not exist yet, the
    first tenant runs alone so that concurrent pipelines never race to create them.
    """
    if concurrency <= 1 or len(options) <= 1:
        results = []
        for opt in options:
            if len(options) > 1:
                results.append(_run_scan_isolated(opt))
            else:
                results.append(run_scan(opt))
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    quiet = [ScanOptions(**{**o.__dict__, "show_progress": False}) for o in options]
    results: list[ScanResult] = []
    if not _raw_tables_exist():
        results.append(_run_scan_isolated(quiet[0]))
        quiet = quiet[1:]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=concurrency, mp_context=context) as pool:
        results.extend(pool.map(_run_scan_isolated, quiet))
    return results


def _raw_tables_exist() -> bool:
    conn = db.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("select to_regclass(%s) is not null", (f"{RAW_DATASET}.deals",))
            return bool(cur.fetchone()[0])
    finally:
        conn.close()
