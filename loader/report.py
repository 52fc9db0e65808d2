"""Human output (rich tables, progress bars on stderr) and ``--json`` output for scans and jobs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

logger = logging.getLogger(__name__)

_STATUS_STYLE = {
    "completed": "green",
    "running": "cyan",
    "pending": "white",
    "failed": "red",
    "cancelled": "yellow",
}


def _console() -> Console:
    return Console(soft_wrap=False, width=160)


class _RateColumn(ProgressColumn):
    """Deals per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} deals/s" if speed else "", style="progress.data.speed")


def scan_progress_bar() -> Progress:
    """A progress display on stderr: description, bar, deals done of total, %, rate, ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


class JobBoard:
    """Progress bars for scans running in other processes, read from the live job records.

    ``python -m loader run --all --concurrency K`` scans tenants in worker processes; the parent
    polls ``loader.scan_jobs`` for those tenants' jobs started since the board started.
    """

    def __init__(self, url: str, tenant_ids: Sequence[str], interval: float = 0.5) -> None:
        self.url, self.tenant_ids, self.interval = url, list(tenant_ids), interval
        self._since = datetime.now(UTC)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-board", daemon=True)
        self._progress = scan_progress_bar()
        self._tasks: dict[str, Any] = {}

    def start(self) -> None:
        self._since = self._database_now() or self._since
        self._progress.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._poll()
        self._progress.stop()

    def _database_now(self) -> datetime | None:
        """The server's clock: jobs are stamped by it, and the client's may be off."""
        from . import db

        try:
            conn = db.connect(self.url)
        except Exception:  # noqa: BLE001 - fall back to the local clock
            return None
        try:
            with conn, conn.cursor() as cur:
                cur.execute("select now()")
                return cur.fetchone()[0]
        finally:
            conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def _poll(self) -> None:
        from . import db

        try:
            conn = db.connect(self.url)
        except Exception:  # noqa: BLE001 - a missed refresh is harmless
            return
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "select scan_id, organization_id, status, total_items, processed_items, "
                    "failed_items from loader.scan_jobs where organization_id = any(%s) "
                    "and created_at >= %s order by created_at",
                    (self.tenant_ids, self._since),
                )
                rows = cur.fetchall()
        except Exception:  # noqa: BLE001
            logger.debug("job board: poll failed", exc_info=True)
            return
        finally:
            conn.close()
        for scan_id, tenant, status, total, processed, failed in rows:
            done = processed + failed
            task = self._tasks.get(scan_id)
            if task is None:
                task = self._tasks[scan_id] = self._progress.add_task(
                    f"{tenant}: deals", total=None)
            label = f"{tenant}: deals" if status in ("pending", "running") else \
                f"{tenant}: {status}"
            self._progress.update(task, completed=done, total=max(total, done) or None,
                                  description=label)


def print_scan_results(results: Sequence[Any]) -> None:
    """Summary of finished scans: one row each (their JSON: ``loader.cli``)."""
    table = Table(title="scan summary")
    numeric = ("deals", "failed", "total", "success", "requests", "seconds")
    for column in ("tenant", "scan id", "mode", "status", *numeric):
        table.add_column(column, justify="right" if column in numeric else "left",
                         **_full_width(column, [r.scan_id or "-" for r in results]))
    for r in results:
        style = _STATUS_STYLE.get(r.status, "")
        table.add_row(escape(r.tenant_id), escape(r.scan_id or "-"), r.mode,
                      f"[{style}]{r.status}[/]", f"{r.processed_items:,}",
                      f"{r.failed_items:,}", f"{r.total_items:,}", r.success_rate or "",
                      "-" if r.requests is None else f"{r.requests:,}", f"{r.seconds:.1f}")
    _console().print(table)


def _full_width(column: str, scan_ids: Sequence[str]) -> dict[str, Any]:
    """Column options that never shorten a scan id: operators copy it into ``cancel``."""
    if column != "scan id":
        return {}
    return {"no_wrap": True, "min_width": max((len(s) for s in scan_ids), default=7)}


def progress_percentage(job: dict[str, Any]) -> float:
    """The seed's progress formula."""
    total = job.get("total_items") or 0
    return round(job.get("processed_items", 0) * 100.0 / total, 2) if total > 0 else 0.0


def print_jobs(jobs: Sequence[dict[str, Any]], *, as_json: bool, single: bool = False) -> None:
    """Scan jobs as a table (or one job as fields), or JSON."""
    from .cli import dumps

    if as_json:
        payload = [dict(j, progress_percentage=progress_percentage(j)) for j in jobs]
        print(dumps(payload[0] if single else payload))
        return
    console = _console()
    if single:
        job = jobs[0]
        table = Table(show_header=False, title=f"scan {job['scan_id']}")
        table.add_column("field", style="bold")
        table.add_column("value")
        for key in ("scan_id", "id", "status", "scan_type", "organization_id", "started_at",
                    "completed_at", "total_items", "processed_items", "failed_items",
                    "success_rate", "batch_size", "error_message", "created_at", "updated_at"):
            value = job.get(key)
            text = "" if value is None else escape(str(value))
            if key == "status":
                text = f"[{_STATUS_STYLE.get(value, '')}]{value}[/]{_stale_note(job)}"
            table.add_row(key, text)
        table.add_row("progress", f"{progress_percentage(job):.2f}%")
        console.print(table)
        return
    table = Table(title="scan jobs")
    for column in ("scan id", "tenant", "type", "status", "progress", "processed", "failed",
                   "started", "completed", "error"):
        table.add_column(column, **_full_width(column, [j["scan_id"] for j in jobs]))
    for job in jobs:
        style = _STATUS_STYLE.get(job["status"], "")
        table.add_row(
            escape(job["scan_id"]), escape(job.get("organization_id") or ""), job["scan_type"],
            f"[{style}]{job['status']}[/]{_stale_note(job)}", f"{progress_percentage(job):.1f}%",
            f"{job['processed_items']:,}", f"{job['failed_items']:,}",
            _short(job.get("started_at")), _short(job.get("completed_at")),
            escape((job.get("error_message") or "")[:60]),
        )
    console.print(table)


def _stale_note(job: dict[str, Any]) -> str:
    """For an active job no loader holds the lock of: it was left by a loader that died; for a
    queued one: it waits for a worker."""
    if job.get("loader_alive") is False:
        return " [red](no loader: interrupted)[/]"
    if job.get("status") == "pending" and job.get("scan_type") == "deals_queued":
        return " (queued)"
    return ""


def _short(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""
