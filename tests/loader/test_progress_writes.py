"""The scan's progress writes, which run in a thread of their own while the source builds the
next batch (``loader.scan.JobProgress``): counters and the cancel check at the same batch
boundary as a write awaited at once, in order, and a failed write raised in the scan's thread;
and the jobs that ``submit --wait`` reads together.
Real PostgreSQL."""

from __future__ import annotations

import threading

import psycopg2
import pytest

from loader import scan_jobs
from loader.errors import LoaderError
from loader.scan import JobProgress
from tests.conftest import query, unique_tenant


def _running_job(database_url: str) -> tuple[psycopg2.extensions.connection, scan_jobs.ScanJob]:
    conn = psycopg2.connect(database_url)
    scan_jobs.ensure_schema(conn)
    job = scan_jobs.create(conn, unique_tenant("progress"), "deals_full", {}, 50)
    assert scan_jobs.mark_running(conn, job) == "running"
    return conn, job


def _counters(db_conn, job: scan_jobs.ScanJob) -> tuple[int, int, int]:
    return query(db_conn, "select processed_items, failed_items, total_items "
                          "from loader.scan_jobs where id = %s", (job.id,))[0]


def test_counters_are_written_in_order_off_the_scans_thread(
        database_url: str, db_conn, monkeypatch: pytest.MonkeyPatch) -> None:
    conn, job = _running_job(database_url)
    progress = JobProgress(conn, job, 50, show=False)
    writers: set[str] = set()
    original = scan_jobs.set_progress

    def recording(*args):  # the real write, noting which thread ran it
        writers.add(threading.current_thread().name)
        return original(*args)

    monkeypatch.setattr(scan_jobs, "set_progress", recording)
    try:
        progress.on_total(500)
        for _ in range(10):
            assert progress.may_continue()
            progress.taken(49, 1)
        assert progress.may_continue()  # the last report awaited
        assert _counters(db_conn, job) == (490, 10, 500)
        assert writers and threading.current_thread().name not in writers
    finally:
        progress.close()
        conn.close()


def test_a_cancel_is_seen_before_the_next_batch_is_taken(database_url: str, db_conn) -> None:
    conn, job = _running_job(database_url)
    progress = JobProgress(conn, job, 50, show=False)
    try:
        assert progress.may_continue()
        progress.taken(50, 0)
        assert progress.may_continue()
        assert scan_jobs.cancel(db_conn, job.scan_id)  # from another session, between batches
        progress.taken(50, 0)  # the batch taken before the cancel was seen: its report says so
        assert not progress.may_continue() and progress.cancelled
        assert _counters(db_conn, job)[0] == 100
    finally:
        progress.close()
        conn.close()


def test_a_failed_write_is_raised_in_the_scans_thread(database_url: str) -> None:
    conn, job = _running_job(database_url)
    progress = JobProgress(conn, job, 50, show=False)
    progress.taken(50, 0)
    assert progress.may_continue()
    conn.close()  # the next write cannot go anywhere
    progress.taken(50, 0)
    with pytest.raises(psycopg2.InterfaceError):
        progress.may_continue()
    progress.taken(50, 0)
    progress.close()  # waits for the write in flight, leaves its error to flush()
    with pytest.raises(psycopg2.InterfaceError):
        progress.flush()


def test_jobs_are_read_together_in_the_order_asked(database_url: str) -> None:
    """``submit --wait`` reads all its jobs in one query each time one changes."""
    conn = psycopg2.connect(database_url)
    try:
        scan_jobs.ensure_schema(conn)
        jobs = [scan_jobs.create(conn, unique_tenant("many"), "deals_full", {}, 50)
                for _ in range(3)]
        assert scan_jobs.mark_running(conn, jobs[1]) == "running"
        ids = [jobs[2].id, jobs[0].id, jobs[1].id]
        rows = scan_jobs.get_many(conn, ids)
        assert [r["id"] for r in rows] == ids
        assert [r["status"] for r in rows] == ["pending", "pending", "running"]
        assert rows == [scan_jobs.get(conn, job_id) for job_id in ids]
        with pytest.raises(LoaderError, match="no scan with id 'nope'"):
            scan_jobs.get_many(conn, [jobs[0].id, "nope"])
    finally:
        conn.close()
