"""Human output (rich tables) and ``--json`` output for scans and jobs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

_STATUS_STYLE = {
    "completed": "green",
    "running": "cyan",
    "pending": "white",
    "failed": "red",
    "cancelled": "yellow",
}


def _console() -> Console:
    return Console(soft_wrap=False, width=160)


def print_scan_results(results: Sequence[Any], *, as_json: bool) -> None:
    """Summary of finished scans: one row each."""
    from .cli import dumps

    if as_json:
        print(dumps([r.as_dict() for r in results]))
        return
    table = Table(title="scan summary")
    for column in ("tenant", "scan id", "mode", "status", "deals", "failed", "total",
                   "requests", "seconds"):
        table.add_column(column, justify="right" if column in (
            "deals", "failed", "total", "requests", "seconds") else "left")
    for r in results:
        style = _STATUS_STYLE.get(r.status, "")
        table.add_row(r.tenant_id, r.scan_id, r.mode, f"[{style}]{r.status}[/]",
                      f"{r.processed_items:,}", f"{r.failed_items:,}", f"{r.total_items:,}",
                      f"{r.requests:,}", f"{r.seconds:.1f}")
    _console().print(table)


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
            if key == "status":
                value = f"[{_STATUS_STYLE.get(value, '')}]{value}[/]"
            table.add_row(key, "" if value is None else str(value))
        table.add_row("progress", f"{progress_percentage(job):.2f}%")
        console.print(table)
        return
    table = Table(title="scan jobs")
    for column in ("scan id", "tenant", "type", "status", "progress", "processed", "failed",
                   "started", "completed", "error"):
        table.add_column(column)
    for job in jobs:
        style = _STATUS_STYLE.get(job["status"], "")
        table.add_row(
            job["scan_id"], job.get("organization_id") or "", job["scan_type"],
            f"[{style}]{job['status']}[/]", f"{progress_percentage(job):.1f}%",
            f"{job['processed_items']:,}", f"{job['failed_items']:,}",
            _short(job.get("started_at")), _short(job.get("completed_at")),
            (job.get("error_message") or "")[:60],
        )
    console.print(table)


def _short(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""
