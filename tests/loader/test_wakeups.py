"""Waking on notifications that psycopg2 had already read off the socket.

psycopg2 collects the notifications that arrive while a query runs in ``conn.notifies``; they
are not on the socket any more, so ``select`` on it does not wake for them. ``submit --wait``
and the worker's loop both query on the connection they listen on. Here a notification is made
to arrive during such a query, and the wait must still end on it. Each wait runs with no
fallback poll (or an hour-long one), so a missed notification shows as a wait that does not end,
not as a slower one (real PostgreSQL; no timing is asserted).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import psycopg2

from loader.worker import Worker, WorkerOptions, _wait_on

#: How long a wait that should end at once may take before the test calls it missed.
MISSED_AFTER_SECONDS = 30


def _listening(database_url: str) -> tuple[Any, str]:
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    channel = f"loader_test_{uuid.uuid4().hex[:12]}"
    with conn.cursor() as cur:
        cur.execute(f"listen {channel}")
    return conn, channel


def _notify_during_a_query(database_url: str, conn: Any, channel: str, payload: str) -> None:
    """Notify ``channel`` from another session, then query on ``conn`` until psycopg2 has
    collected the notification into ``conn.notifies`` (it is off the socket then)."""
    other = psycopg2.connect(database_url)
    other.autocommit = True
    try:
        with other.cursor() as cur:
            cur.execute("select pg_notify(%s, %s)", (channel, payload))
    finally:
        other.close()
    deadline = time.monotonic() + MISSED_AFTER_SECONDS
    while not conn.notifies:
        assert time.monotonic() < deadline, "the notification never reached the session"
        with conn.cursor() as cur:
            cur.execute("select 1")
        time.sleep(0.01)


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def test_wait_on_checks_again_when_notified_during_its_check(database_url: str) -> None:
    conn, channel = _listening(database_url)
    checks: list[int] = []

    def check() -> str | None:
        checks.append(1)
        if len(checks) == 1:  # the job ends while its status is being read
            _notify_during_a_query(database_url, conn, channel, "ended")
            return None
        return "ended"

    try:
        thread, out = _in_thread(lambda: _wait_on(
            conn, channel, check, timeout=None, timed_out=lambda: "timed out", recheck=None))
        thread.join(MISSED_AFTER_SECONDS)
        missed = thread.is_alive()
        if missed:  # release the thread before failing
            _notify_during_a_query(database_url, psycopg2.connect(database_url), channel, "x")
        assert not missed, "the notification that came during the check was missed"
        assert out == {"result": "ended"} and len(checks) == 2
    finally:
        conn.close()


def test_wait_on_still_wakes_on_a_notification_on_the_socket(database_url: str) -> None:
    conn, channel = _listening(database_url)
    checks: list[int] = []
    checked = threading.Event()

    def check() -> str | None:
        checks.append(1)
        checked.set()
        return "ended" if len(checks) > 1 else None

    try:
        thread, out = _in_thread(lambda: _wait_on(
            conn, channel, check, timeout=None, timed_out=lambda: "timed out", recheck=None))
        assert checked.wait(MISSED_AFTER_SECONDS)
        other = psycopg2.connect(database_url)
        other.autocommit = True
        with other.cursor() as cur:
            cur.execute("select pg_notify(%s, 'ended')", (channel,))
        other.close()
        thread.join(MISSED_AFTER_SECONDS)
        assert not thread.is_alive() and out == {"result": "ended"}
    finally:
        conn.close()


def test_worker_loop_handles_a_notification_read_by_its_own_queries(
        database_url: str, monkeypatch: Any) -> None:
    """A scan of tenant T ended (its lock is free) while the worker ran a query: the worker
    must not sleep its poll interval before trying T's queued scan."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    worker = Worker(WorkerOptions(poll=3600), out=open("/dev/null", "w"))  # noqa: SIM115
    conn, channel = _listening(database_url)
    tenant = f"wake-{uuid.uuid4().hex[:8]}"
    worker._busy_until[tenant] = time.monotonic() + 3600  # noqa: SLF001 - the loop's state
    try:
        _notify_during_a_query(database_url, conn, channel,
                               json.dumps({"status": "completed", "tenant_id": tenant}))
        thread, out = _in_thread(lambda: worker._wait(conn))  # noqa: SLF001
        thread.join(MISSED_AFTER_SECONDS)
        missed = thread.is_alive()
        if missed:
            worker._wake()  # noqa: SLF001 - release the thread before failing
        assert not missed, "the worker slept through a notification its query had read"
        assert "error" not in out
        assert tenant not in worker._busy_until  # noqa: SLF001 - the scan may start now
        assert not conn.notifies
    finally:
        conn.close()
        worker.out.close()

