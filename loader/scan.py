"""One tenant's scan: job record, advisory lock, dlt pipeline run, status, progress."""

from __future__ import annotations

import csv
import gzip
import hashlib
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dlt
import psycopg2.extensions
from dlt.common.storages.load_package import ParsedLoadJobFileName
from dlt.extract.state import reset_resource_state
from dlt.pipeline.exceptions import PipelineStepFailed

from . import db, dlt_speedups, scan_jobs, sessions, settings, tenants
from .destination import CachedPostgres
from .errors import LoaderError
from .hubspot import SOURCE_NAME, STAGE_HISTORY_TABLE, hubspot_deals, spool_dir
from .hubspot.helpers import HubSpotClient, InOrderCalls
from .hubspot.pacer import RequestPacer
from .known_stages import StageLookup
from .runner import (
    CTRL_C_REASON,
    RAW_DATASET,
    ScanOptions,
    ScanResult,
    failed_result,
    skipped_result,
)
from .runner import one_line as _one_line

logger = logging.getLogger(__name__)

# Before any pipeline exists (and, in a fork server's preload, before its scan processes fork).
dlt_speedups.install()


class JobProgress:
    """Writes progress to the live job after every batch and notices cancellation.

    The source reports each batch it takes (:meth:`taken`) and asks :meth:`may_continue`
    before it takes the next; the counters are written to ``loader.scan_jobs`` in the same
    statement that reads the job's status back, so a ``cancel`` from another terminal stops the
    scan at the next batch boundary. With ``show`` a progress bar (deals of total, rate, ETA) is
    drawn on stderr. Each write is a small transaction committed without waiting for the WAL
    flush (``synchronous_commit = off``, see :func:`scan_jobs.set_progress`): a commit per batch
    then costs a round trip, not a disk sync, and the counters stay exact per batch.

    The round trip runs in a thread of its own while the source builds the next batch, and its
    answer is awaited before that batch is taken: the same boundary as a write awaited at once,
    without the scan's thread waiting on the database for every batch (a 50-deal batch takes
    about a millisecond to build; the write about half of one). During the pipeline's run only
    that thread uses ``conn``; :meth:`close` waits for it before anything else does.
    """

    def __init__(
        self,
        conn: psycopg2.extensions.connection,
        job: scan_jobs.ScanJob,
        batch_size: int,
        show: bool,
    ) -> None:
        self.conn, self.job, self.batch_size = conn, job, batch_size
        self.processed = self.failed = self.total = 0
        self.cancelled = False
        self._bar: Any = None
        self._writer: InOrderCalls | None = None
        if show:
            from .report import scan_progress_bar

            self._bar = scan_progress_bar()
            self._task = self._bar.add_task(f"{job.tenant_id}: deals", total=None)
            self._bar.start()

    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._writer is None:
            self._writer = InOrderCalls(f"progress-{self.job.tenant_id}")
        self._writer.submit(fn, self.conn, self.job, *args)

    def on_total(self, total: int) -> None:
        """HubSpot told how many deals to expect (the search API's ``total``)."""
        self.total = max(self.total, total)
        self._submit(scan_jobs.set_total, self.total)
        if self._bar is not None:
            self._bar.update(self._task, total=self.total)

    def taken(self, processed: int, failed: int) -> None:
        """dlt takes a batch of ``processed`` + ``failed`` records: count them and start writing
        the counters (:meth:`may_continue` awaits the answer)."""
        self.processed += processed
        self.failed += failed
        if self._bar is not None:
            done = self.processed + self.failed
            self._bar.update(self._task, completed=done, total=max(self.total, done) or None)
        self._submit(scan_jobs.set_progress, self.processed, self.failed)

    def may_continue(self) -> bool:
        """Wait for the writes in flight (raising what failed in them); False once the job was
        cancelled, by ``cancel`` or here (stop before taking another batch)."""
        if self._writer is not None:
            while self._writer.pending:
                if self._writer.answer() == "cancelled":
                    self.cancelled = True
        return not self.cancelled

    def flush(self) -> None:
        """Write the counters; remember whether the job was cancelled meanwhile."""
        self.may_continue()
        status = scan_jobs.set_progress(self.conn, self.job, self.processed, self.failed)
        logger.debug("scan %s: %d processed, %d failed, job %s", self.job.scan_id,
                     self.processed, self.failed, status)
        if status == "cancelled":
            self.cancelled = True

    def close(self) -> None:
        """Wait for the writes in flight (their errors are left to :meth:`flush`, which writes
        the counters again on the same connection) and stop the writer thread."""
        if self._writer is not None:
            for exc in self._writer.close():  # flush() meets the same failure, and reports it
                logger.debug("scan %s: a progress write failed", self.job.scan_id, exc_info=exc)
            self._writer = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class _CtrlCCancels:
    """While a scan runs in the main thread, the first Ctrl-C (SIGINT) cancels it like
    ``python -m loader cancel``: it stops at the next batch boundary and loads what it took.
    A second Ctrl-C aborts at once (KeyboardInterrupt: the job ends cancelled, nothing of the
    running step is loaded)."""

    def __init__(self, progress: JobProgress, job: scan_jobs.ScanJob) -> None:
        self.progress, self.job = progress, job
        self.pressed = False
        self._previous: Any = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True
        self.progress.cancelled = True
        print(f"scan {self.job.scan_id}: stopping at the next batch (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)


class TenantBusy(LoaderError):
    """Another process holds the tenant's scan lock."""


def acquire_tenant_lock(url: str, tenant_id: str) -> psycopg2.extensions.connection:
    """Hold the tenant's scan lock on a dedicated session, or refuse naming the running scan.

    A session-level advisory lock: it is released when the session ends, however the process
    ends (SIGKILL included), so a dead loader never blocks the next scan, and when the session
    is handed back (:func:`sessions.release`: reset, which releases it, or closed).
    """
    conn = sessions.session(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("select pg_try_advisory_lock(hashtextextended(%s, 0))",
                        (scan_jobs.lock_key(tenant_id),))
            (locked,) = cur.fetchone()
        if locked:
            return conn
        running = [job for job in scan_jobs.list_jobs(conn, active=True, tenant_id=tenant_id)
                   if job["scan_type"] != scan_jobs.QUEUED_TYPE][:1]
    except BaseException:
        sessions.release(conn, url)
        raise
    sessions.release(conn, url)
    if running:
        name = running[0]["scan_id"]
        raise TenantBusy(
            f"tenant {tenant_id} already has a running scan {name}; "
            f"wait for it or cancel it with: python -m loader cancel {name}"
        )
    raise TenantBusy(
        f"tenant {tenant_id} already has a scan starting in another process; "
        "see: python -m loader scans --active --tenant " + tenant_id
    )


#: dlt settings measured with ``make bench`` (see README "Performance"); the environment
#: overrides any of them. Intermediate files are local and short-lived: gzip cost a quarter of
#: a scan's CPU. One normalize worker in-process: tenants already run in parallel processes,
#: and a forked pool per scan only adds start-up time and memory. Writer buffers of 1,000 rows
#: (dlt's default is 5,000): normalize loads one buffer at a time, and with 5,000 its peak grew
#: with the scan's size (148 MB at 5,000 deals, 203 MB at 25,000; with 1,000: 102 and 106 MB).
DLT_PERFORMANCE_DEFAULTS = {
    "DATA_WRITER__DISABLE_COMPRESSION": "true",
    "DATA_WRITER__BUFFER_MAX_ITEMS": "1000",
    "NORMALIZE__WORKERS": "1",
    # A scan's load has five jobs at most (deals, their stage history, pipelines and stages,
    # rejected records), each a COPY on a connection of its own.
    "LOAD__WORKERS": "4",
    # The source writes its own csv files with the load id (hubspot/__init__.py, ``_Spool``).
    # Packages that an earlier version extracted as Arrow (parquet) and left pending still
    # need dlt to stamp their rows with it.
    "NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID": "true",
    # dlt's extract loop sleeps this long whenever it finds nothing to take, which with our
    # resources (plain generators, no futures) happens once at the end of every extract: twice
    # a scan (its source, then its state). dlt's 10 ms were 18 ms of an incremental scan's
    # 0.23 s wall; the interval only paces polls of futures, which our resources never make.
    "EXTRACT__FUTURES_POLL_INTERVAL": "0.001",
}


#: Pipelines this process made, per (tenant, database, pipelines folder): a worker's scan process
#: runs many scans and reuses them (their state is synced with the destination before each scan).
_PIPELINES: dict[tuple[str, str, str], dlt.Pipeline] = {}


def make_pipeline(tenant_id: str, url: str) -> dlt.Pipeline:
    """The tenant's own dlt pipeline (own state, working folder and staging dataset), loading
    into raw_hubspot. Concurrent tenants share no local files and no staging tables."""
    for key, value in DLT_PERFORMANCE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    pipelines_dir = str(settings.loader_home() / "dlt")
    key = (tenant_id, url, pipelines_dir)
    if key not in _PIPELINES:
        _PIPELINES[key] = _new_pipeline(tenant_id, url, pipelines_dir)
    return _PIPELINES[key]


def _new_pipeline(tenant_id: str, url: str, pipelines_dir: str) -> dlt.Pipeline:
    return dlt.pipeline(
        pipeline_name=f"hubspot_{tenant_id}",
        pipelines_dir=pipelines_dir,
        destination=CachedPostgres(
            credentials=_dlt_credentials(url),
            staging_dataset_name_layout=_staging_layout(tenant_id),
        ),
        dataset_name=RAW_DATASET,
    )


def _staging_layout(tenant_id: str) -> str:
    """``%s_staging_<tenant>``: a staging dataset per tenant (PostgreSQL names ≤ 63 bytes, and
    distinct even where dlt's name normalisation would fold two tenant ids together)."""
    slug = "".join(c if c.isalnum() else "_" for c in tenant_id.lower())[:20]
    digest = hashlib.sha1(tenant_id.encode()).hexdigest()[:8]
    return f"%s_staging_{slug}_{digest}"


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


def run_scan(options: ScanOptions, url: str | None = None, *,
             queued_job_id: str | None = None,
             conn: psycopg2.extensions.connection | None = None) -> ScanResult:
    """Run one tenant's scan end to end (without dbt).

    Raises :class:`LoaderError` only when no job could be started (no token, the tenant is
    already being scanned (:class:`TenantBusy`), no database); a scan that started always ends
    its job ``completed``, ``failed`` or ``cancelled`` and comes back as a result. Ctrl-C ends
    the job ``cancelled`` and is re-raised. With ``queued_job_id`` the scan is that queued job
    (``submit``) rather than a new one; a job no longer queued comes back ``skipped``. The job
    is recorded through ``conn`` when given (the caller's, left open), else a connection of its
    own.
    """
    tenant = tenants.resolve(options.tenant_id)
    token = tenant.access_token()
    url = url or db.database_url()
    own_conn = conn is None
    conn = sessions.session(url) if conn is None else conn
    try:
        scan_jobs.ensure_schema(conn)
        lock = acquire_tenant_lock(url, tenant.id)
    except BaseException:
        if own_conn:
            sessions.release(conn, url)
        raise
    started = time.monotonic()
    try:
        # We hold the tenant's lock: any job still active was left by a loader that died.
        interrupted = scan_jobs.fail_interrupted(conn, tenant.id)
        for scan_id in interrupted:
            logger.warning("tenant %s: scan %s was interrupted; marked failed", tenant.id, scan_id)
        pipeline = make_pipeline(tenant.id, url)
        # The csv files a killed scan's source was writing (never imported, so never loaded).
        shutil.rmtree(spool_dir(pipeline.working_dir), ignore_errors=True)
        error: str | None = None
        user_interrupt: KeyboardInterrupt | None = None
        try:
            pending = _finish_pending_load(pipeline)
        except Exception as exc:  # noqa: BLE001 - recorded on the job below
            pending, error = [], (
                f"tenant {tenant.id}: could not finish the load an interrupted scan left "
                f"pending: {_one_line(exc)}"
            )
        drop_legacy_history_key(conn, url)
        full = options.full_refresh or not _has_completed_full(pipeline, conn)
        mode = "full" if full else "incremental"
        config = {
            "tenant_id": tenant.id,
            "api_base_url": options.api_base_url,
            "mode": mode,
            "full_refresh": options.full_refresh,
            "batch_size": options.batch_size,
            "lookback_seconds": options.lookback_seconds,
            "stage_history": options.stage_history,
            "token_source": tenant.token_source,
            "resumed_after": interrupted,
            "finished_pending_loads": pending,
        }
        if queued_job_id is None:
            job = scan_jobs.create(conn, tenant.id, f"deals_{mode}", config, options.batch_size)
            status_now = scan_jobs.mark_running(conn, job)
        else:
            claimed = scan_jobs.claim(conn, queued_job_id, f"deals_{mode}", config)
            if claimed is None:
                return skipped_result(options, queued_job_id, "not queued any more")
            job, status_now = claimed
        progress = JobProgress(conn, job, options.batch_size, options.show_progress)
        client = HubSpotClient(options.api_base_url, token, tenant.id, pacer=RequestPacer())
        ctrl_c = _CtrlCCancels(progress, job)
        known_stages = StageLookup(url, tenant.id)
        try:
            ctrl_c.install()
            if status_now == "cancelled":
                progress.cancelled = True
            elif error is None:
                if full:
                    # A full scan reads every deal: forget the cursors, or it would skip every
                    # deal older than a cursor an interrupted or cancelled full scan left behind
                    # (and the archived deals listed before an earlier pass's start).
                    _reset_cursors(pipeline)
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
                    known_stages=known_stages,
                )
                pipeline.run(source, loader_file_format=options.loader_file_format)
        except (PipelineStepFailed, LoaderError) as exc:
            interrupt = _interrupt_in(exc)  # dlt wraps a Ctrl-C inside a step
            if interrupt is not None:
                user_interrupt = interrupt
            else:
                error = _one_line(exc)
        except KeyboardInterrupt as exc:
            user_interrupt = exc
        except Exception as exc:  # noqa: BLE001 - the job must not stay "running"
            logger.debug("scan %s failed", job.scan_id, exc_info=True)
            error = f"tenant {tenant.id}: unexpected {type(exc).__name__}: {_one_line(exc)}"
        finally:
            ctrl_c.uninstall()
            known_stages.close()
            progress.close()
        progress.flush()
        if user_interrupt is not None:
            scan_jobs.finish(conn, job, "cancelled", "Cancelled by user (interrupted)")
            raise user_interrupt
        if error is not None:
            status = scan_jobs.finish(conn, job, "failed", error)
        elif progress.cancelled:
            reason = CTRL_C_REASON if ctrl_c.pressed else "Cancelled by user"
            status = scan_jobs.finish(conn, job, "cancelled", reason)
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
            success_rate=final["success_rate"],
        )
    finally:
        sessions.release(lock, url)
        if own_conn:
            sessions.release(conn, url)


def _finish_pending_load(pipeline: dlt.Pipeline) -> list[str]:
    """Load what a scan killed after extracting left in the pipeline's working folder.

    Those packages hold complete batches plus the cursor that goes with them; loading them
    commits both, and the new scan then continues from that cursor. (Left alone, dlt's ``run``
    would load them *instead of* running the new scan.) Returns their load ids.
    """
    if not pipeline.has_pending_data:
        return []
    load_ids = [*pipeline.list_extracted_load_packages(),
                *pipeline.list_normalized_load_packages()]
    logger.warning("pipeline %s: loading %d package(s) an interrupted scan left pending",
                   pipeline.pipeline_name, len(load_ids))
    if pipeline.list_extracted_load_packages():
        pipeline.normalize()
    if pipeline.list_normalized_load_packages():
        _settle_committed_jobs(pipeline)
        pipeline.load()
    return sorted(set(load_ids))


#: The unique constraint dlt created on the stage history's ``_dlt_id`` until 2026-12-07 (the
#: table's columns had the ``unique`` hint of a dlt child table; see ``STAGE_HISTORY_COLUMNS``).
LEGACY_HISTORY_KEY = "deals_stage_history__dlt_id_key"
#: How long a scan waits for the history table's lock to drop that constraint (a build reading
#: the table, a scan loading into it) before it leaves the drop to a later scan.
LEGACY_KEY_LOCK_TIMEOUT = "1s"


def drop_legacy_history_key(conn: psycopg2.extensions.connection, url: str) -> bool:
    """Drop :data:`LEGACY_HISTORY_KEY` from a database created before the stage history lost
    it: every load checked each entry against it, for nothing (README "Performance"). The
    catalog is read first (through ``conn``), so a database without it takes no lock; the drop,
    on a connection of its own, waits at most :data:`LEGACY_KEY_LOCK_TIMEOUT` for the table's
    lock, and anything that stops it (the lock, a role that does not own the table) leaves it
    to a later scan while this one goes on. Returns whether this call dropped it."""
    table = f"{RAW_DATASET}.{STAGE_HISTORY_TABLE}"
    with conn, conn.cursor() as cur:
        cur.execute("select exists (select from pg_constraint where conname = %s "
                    "and conrelid = to_regclass(%s))", (LEGACY_HISTORY_KEY, table))
        if not cur.fetchone()[0]:
            return False
    try:
        with db.transaction(url) as cur:
            cur.execute("set local lock_timeout = %s", (LEGACY_KEY_LOCK_TIMEOUT,))
            cur.execute(f"alter table {table} drop constraint if exists {LEGACY_HISTORY_KEY}")
    except (psycopg2.Error, LoaderError) as exc:
        logger.warning("%s: unique key %s not dropped now (a later scan tries again): %s",
                       table, LEGACY_HISTORY_KEY, _one_line(exc))
        return False
    logger.info("%s: dropped the unique key %s, which every load checked", table,
                LEGACY_HISTORY_KEY)
    return True


def _settle_committed_jobs(pipeline: dlt.Pipeline) -> list[str]:
    """Mark as completed the load jobs a killed loader had started and whose rows are committed.

    dlt loads each job file in a transaction of its own, then moves the file to
    ``completed_jobs``. A loader killed between the two leaves a committed job in
    ``started_jobs``, which dlt would load again on resume: into a table with a unique
    ``_dlt_id`` (dlt's own child and state tables) the rows are refused, and after five retries
    the package fails for good; into the deals and their stage history, which have no such key,
    they would land twice. A job's rows are all in or all out, so its first row's ``_dlt_id``
    tells which: present means committed. The lookup also names the first row's indexed columns
    (:data:`_NARROWING_COLUMNS`), so it reads the rows of one deal or one scan, not the table.
    Returns the job files it completed. The data tables' jobs are csv; dlt writes its own state
    table's as SQL ``insert_values``, which is read the same way.
    """
    packages = pipeline._get_load_storage().normalized_packages  # noqa: SLF001 - no public API
    settled: list[str] = []
    with pipeline.sql_client() as client:
        for load_id in packages.list_packages():
            for relative in packages.list_started_jobs(load_id):
                file_name = os.path.basename(relative)
                job = ParsedLoadJobFileName.parse(file_name)
                reader = _FIRST_ROW_KEYS.get(job.file_format)
                if reader is None:
                    continue  # no format of ours: left to dlt's retry
                keys = reader(packages.storage.make_full_path(relative), job.is_compressed)
                table = client.make_qualified_table_name(job.table_name)
                if "_dlt_id" not in keys or not _scalar(
                        client, "select to_regclass(%s) is not null", table):
                    continue  # nothing to tell by (or no table yet): loading it again is safe
                condition = " and ".join(f"{column} = %s" for column in keys)
                if _scalar(client, f"select exists (select from {table} where {condition})",
                           *keys.values()):
                    packages.complete_job(load_id, file_name)
                    settled.append(file_name)
    if settled:
        logger.warning("pipeline %s: %d job(s) the interrupted load had committed: %s",
                       pipeline.pipeline_name, len(settled), ", ".join(sorted(settled)))
    return settled


def _scalar(client: Any, sql: str, *args: Any) -> Any:
    rows = client.execute_sql(sql, *args)
    return rows[0][0] if rows else None


#: Columns of the loader's raw tables with an index (``ensure_raw_read_indexes``, dbt's
#: on-run-start) that a job file's first row names besides its ``_dlt_id``: the deal a stage
#: history entry belongs to, the scan job of a deal version.
_NARROWING_COLUMNS = ("_dlt_parent_id", "_scan_job_id")


def _first_csv_keys(path: str, compressed: bool) -> dict[str, str]:
    """The first row of one of dlt's csv job files: its :data:`_NARROWING_COLUMNS` that have a
    value, then its ``_dlt_id`` (empty if it has no rows or no ``_dlt_id``)."""
    opener = gzip.open if compressed else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle)
        header = next(rows, None)
        first = next(rows, None)
    if not header or not first or "_dlt_id" not in header:
        return {}
    row = dict(zip(header, first, strict=False))
    keys = {column: row[column] for column in _NARROWING_COLUMNS if row.get(column)}
    keys["_dlt_id"] = row["_dlt_id"]
    return keys


#: One SQL literal of a row in dlt's ``insert_values`` files (``escape_postgres_literal``): an
#: ``E'...'`` string (``''`` and backslash escapes), a plain ``'...'`` string (dates and times),
#: or a bare word (numbers, NULL, TRUE / FALSE); then the comma or parenthesis after it.
_SQL_LITERAL = re.compile(
    r"\s*(?:E'((?:[^'\\]|''|\\.)*)'|'((?:[^']|'')*)'|([^,()'\s][^,()']*?))\s*([,)])", re.S)
_E_STRING_ESCAPE = re.compile(r"''|\\(.)", re.S)
_E_STRING_CHARS = {"n": "\n", "r": "\r"}


def _first_dlt_id_insert_values(path: str, compressed: bool) -> str | None:
    """The ``_dlt_id`` of the first row of one of dlt's ``insert_values`` job files (None if it
    has none). dlt writes ``INSERT INTO {}("col",...)``, a ``VALUES`` line, then a row a line
    (newlines inside strings are escaped)."""
    opener = gzip.open if compressed else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        insert, _values, row = handle.readline(), handle.readline(), handle.readline()
    opening, closing = insert.find("("), insert.rfind(")")
    if opening < 0 or closing < opening or not row.startswith("("):
        return None
    columns = next(csv.reader([insert[opening + 1:closing]], quotechar='"'), [])
    values: list[str | None] = []
    position = 1
    while True:
        literal = _SQL_LITERAL.match(row, position)
        if literal is None:
            return None  # not a row as dlt writes them
        escaped, plain, bare, end = literal.groups()
        if escaped is not None:
            values.append(_E_STRING_ESCAPE.sub(
                lambda m: "'" if m.group(1) is None else _E_STRING_CHARS.get(m.group(1),
                                                                             m.group(1)),
                escaped))
        elif plain is not None:
            values.append(plain.replace("''", "'"))
        else:
            values.append(None if bare.upper() == "NULL" else bare)
        position = literal.end()
        if end == ")":
            break
    if "_dlt_id" not in columns or len(values) != len(columns):
        return None
    return values[columns.index("_dlt_id")]


def _first_insert_values_keys(path: str, compressed: bool) -> dict[str, str]:
    """The ``_dlt_id`` of the first row of an ``insert_values`` job file (dlt's state table's),
    as :func:`_first_csv_keys` gives it (empty if it has none)."""
    dlt_id = _first_dlt_id_insert_values(path, compressed)
    return {} if dlt_id is None else {"_dlt_id": dlt_id}


#: How the first row's ``_dlt_id`` (and the columns that narrow its lookup) is read, per job
#: file format.
_FIRST_ROW_KEYS = {"csv": _first_csv_keys, "insert_values": _first_insert_values_keys}


def _has_completed_full(pipeline: dlt.Pipeline, conn: psycopg2.extensions.connection) -> bool:
    """Whether this tenant's pipeline state records a completed full scan (the cursor is valid).

    The state is synced with the destination first (another machine may have scanned the
    tenant), unless the destination's latest committed state is the one this working folder
    holds (one query instead of dlt's sync: a worker's scan process keeps its pipelines between
    scans, and a scan's state is usually its own last one).
    """
    if not _local_state_is_current(pipeline, conn):
        try:
            pipeline.sync_destination()
        except Exception:  # noqa: BLE001 - first run: nothing to sync yet
            pass
        else:
            _mark_synced(pipeline)
    else:
        _mark_synced(pipeline)
    state = pipeline.state.get("sources", {}).get(SOURCE_NAME, {})
    return bool(state.get("resources", {}).get("deals", {}).get("full_scan_completed"))


def _mark_synced(pipeline: dlt.Pipeline) -> None:
    # pipeline.run() would sync the same state again (it syncs once per pipeline object).
    pipeline._state_restored = True  # noqa: SLF001 - dlt has no public switch for this


def _local_state_is_current(pipeline: dlt.Pipeline, conn: psycopg2.extensions.connection
                            ) -> bool:
    """Whether the destination's latest state of this pipeline (of a completed load, as dlt
    reads it) has the version hash of the local state, and the local schema is there."""
    local = pipeline.state.get("_version_hash")
    if not local or pipeline.default_schema_name not in pipeline.schema_names:
        return False
    with conn, conn.cursor() as cur:
        cur.execute("select to_regclass(%s) is not null and to_regclass(%s) is not null",
                    (f"{RAW_DATASET}._dlt_pipeline_state", f"{RAW_DATASET}._dlt_loads"))
        if not cur.fetchone()[0]:
            return False
        cur.execute(
            f"select state.version_hash from {RAW_DATASET}._dlt_pipeline_state as state "
            f"join {RAW_DATASET}._dlt_loads as loads on loads.load_id = state._dlt_load_id "
            "where state.pipeline_name = %s and loads.status = 0 "
            "order by loads.load_id desc limit 1",
            (pipeline.pipeline_name,),
        )
        row = cur.fetchone()
    return row is not None and row[0] == local


def _reset_cursors(pipeline: dlt.Pipeline) -> None:
    """Forget the deals' and archived deals' cursors so a full scan re-reads (and re-stamps)
    every deal, archived ones included, and the digest of the pipelines last landed, so it
    lands them too."""
    if SOURCE_NAME not in pipeline.state.get("sources", {}):
        return  # nothing stored yet: the scan is a full one anyway
    # The changed state is committed with the scan's data (the resources write to it too).
    with pipeline.managed_state() as state:
        for resource in ("deals", "archived_deals", "pipelines"):
            reset_resource_state(resource, state["sources"][SOURCE_NAME])


def _interrupt_in(exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt somewhere in an exception chain (dlt's ``exception`` included)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt):
            return current
        nested = getattr(current, "exception", None)
        current = nested if isinstance(nested, BaseException) else (
            current.__cause__ or current.__context__
        )
    return None


def _run_scan_isolated(options: ScanOptions, url: str | None = None) -> ScanResult:
    """A scan whose refusal or crash still comes back as a (failed) result."""
    try:
        return run_scan(options, url)
    except LoaderError as exc:
        return failed_result(options, str(exc))
    except Exception as exc:  # noqa: BLE001 - one tenant must not stop the others
        logger.debug("tenant %s: scan crashed", options.tenant_id, exc_info=True)
        return failed_result(options, f"tenant {options.tenant_id}: unexpected "
                                       f"{type(exc).__name__}: {_one_line(exc)}")


def run_queued_scan(job_id: str, url: str) -> ScanResult:
    """Run the queued scan ``job_id`` (``submit``) with the options it was queued with.

    A job no longer queued (started elsewhere, cancelled) comes back ``skipped``; a tenant another
    process is scanning, ``busy`` (the job stays queued). If the scan cannot start (no token, say),
    the queued job ends ``failed`` with the reason, as a scan that started would.
    """
    conn = sessions.session(url)
    try:
        row = scan_jobs.get(conn, job_id)
        config = row["config"] or {}
        options = ScanOptions(
            tenant_id=row["organization_id"],
            full_refresh=bool(config.get("full_refresh", False)),
            batch_size=int(row["batch_size"]),
            lookback_seconds=int(config.get("lookback_seconds",
                                            settings.DEFAULT_LOOKBACK_SECONDS)),
            stage_history=bool(config.get("stage_history", True)),
        )
        if row["status"] != "pending" or row["scan_type"] != scan_jobs.QUEUED_TYPE:
            return skipped_result(options, job_id, f"scan {row['scan_id']} is {row['status']}")
        try:
            return run_scan(options, url, queued_job_id=job_id, conn=conn)
        except TenantBusy as exc:
            return skipped_result(options, job_id, str(exc), status="busy")
        except Exception as exc:  # noqa: BLE001 - the queued job must not stay queued
            message = str(exc) if isinstance(exc, LoaderError) else (
                f"tenant {options.tenant_id}: unexpected {type(exc).__name__}: {_one_line(exc)}")
            job = scan_jobs.ScanJob(job_id, row["scan_id"], options.tenant_id)
            scan_jobs.finish(conn, job, "failed", message)
            return ScanResult(options.tenant_id, row["scan_id"], job_id, "failed", "n/a", 0, 0,
                              0, 0, 0.0, message)
    finally:
        sessions.release(conn, url)


def enter_scan_process(environ: dict[str, str]) -> None:
    """Set a scan process (forked from a fork server: ``run --all``'s, the worker's) up for its
    next scan: the environment of the process that submitted the scan (it would otherwise see
    the one of the moment the fork server started), and its PostgreSQL sessions kept from one
    scan to the next (:mod:`loader.sessions`)."""
    os.environ.clear()
    os.environ.update(environ)
    sessions.keep()


def _run_scan_in_worker(options: ScanOptions, url: str, environ: dict[str, str]) -> ScanResult:
    """``_run_scan_isolated`` in a pool worker of ``run --all`` (:func:`enter_scan_process`)."""
    enter_scan_process(environ)
    return _run_scan_isolated(options, url)
