"""``loader.sessions``: the PostgreSQL sessions a scan process keeps from one scan to the next.

A kept session is reset when handed back (its advisory locks free at once, its settings and
temporary tables gone), checked when taken again (one the server ended is replaced), closed by
the process when unused for a while, never kept beyond a few per key, never used by a forked
child; and two scans in a scan process run on the same sessions, the loader's and dlt's."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from loader import sessions
from tests.conftest import connect, query, scan_probe


@pytest.fixture()
def kept(database_url: str) -> Iterator[str]:
    """Sessions kept in this process for the test; all closed and keeping off after it."""
    sessions.keep()
    try:
        yield database_url
    finally:
        sessions.close_all()
        sessions.stop_keeping()


def _pid(conn: psycopg2.extensions.connection) -> int:
    return conn.get_backend_pid()


def test_a_handed_back_session_is_reset_and_taken_again(kept: str) -> None:
    url = kept
    first = sessions.session(url, autocommit=True)
    pid = _pid(first)
    with first.cursor() as cur:
        cur.execute("select pg_advisory_lock(hashtextextended('sessions-test', 0))")
        cur.execute("set search_path = nowhere")
        cur.execute("create temporary table scratch (x int)")
    sessions.release(first, url)

    # The lock is free the moment the session is handed back, as when it closed.
    other = connect(url)
    try:
        assert query(other, "select pg_try_advisory_lock(hashtextextended('sessions-test', 0))"
                     ) == [(True,)]
        query(other, "select pg_advisory_unlock_all()")
    finally:
        other.close()

    again = sessions.session(url)  # a transaction of its own, as db.connect gives
    try:
        assert _pid(again) == pid and not again.autocommit
        with again.cursor() as cur:
            cur.execute("show search_path")
            assert cur.fetchone()[0] != "nowhere"
            cur.execute("select to_regclass('pg_temp.scratch')")
            assert cur.fetchone()[0] is None
            cur.execute("show idle_session_timeout")
            assert cur.fetchone()[0] == "0"  # no timeout while in use
        again.rollback()
    finally:
        sessions.release(again, url)
    # While kept, the server would end it after a while unused (should this process not).
    ((idle, _),) = sessions._kept[("loader", url)]  # noqa: SLF001
    with idle.cursor() as cur:
        cur.execute("show idle_session_timeout")
        assert cur.fetchone()[0] == sessions.SERVER_IDLE_TIMEOUT


def test_a_session_kept_unused_too_long_is_closed_by_the_process(
        kept: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = kept
    conn = sessions.session(url, autocommit=True)
    pid = _pid(conn)
    sessions.release(conn, url)
    assert sessions.reap() == 0 and not conn.closed  # just handed back: kept
    monkeypatch.setattr(sessions, "IDLE_SECONDS", 0.2)
    sessions._reaper_wake.set()  # noqa: SLF001 - its next round now, not in up to 15 s
    deadline = time.monotonic() + 10
    while not conn.closed and time.monotonic() < deadline:  # the process's own thread
        time.sleep(0.05)
    assert conn.closed and sessions._kept[("loader", url)] == []  # noqa: SLF001
    admin = connect(url)
    try:  # closed by the client: the session is gone, not ended by the server
        deadline = time.monotonic() + 5
        while query(admin, "select count(*) from pg_stat_activity where pid = %s", (pid,)
                    ) != [(0,)] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert query(admin, "select count(*) from pg_stat_activity where pid = %s",
                     (pid,)) == [(0,)]
    finally:
        admin.close()


def test_a_session_in_a_failed_transaction_is_rolled_back_and_kept(kept: str) -> None:
    url = kept
    conn = sessions.session(url)
    pid = _pid(conn)
    with conn.cursor() as cur, pytest.raises(psycopg2.Error):
        cur.execute("select 1 / 0")
    sessions.release(conn, url)
    again = sessions.session(url, autocommit=True)
    try:
        assert _pid(again) == pid
        assert query(again, "select 2") == [(2,)]
    finally:
        sessions.release(again, url)


def test_a_session_the_server_ended_is_replaced(kept: str) -> None:
    url = kept
    conn = sessions.session(url, autocommit=True)
    pid = _pid(conn)
    sessions.release(conn, url)
    admin = connect(url)
    try:
        query(admin, "select pg_terminate_backend(%s)", (pid,))
    finally:
        admin.close()
    fresh = sessions.session(url, autocommit=True)
    try:
        assert _pid(fresh) != pid
        assert query(fresh, "select 3") == [(3,)]
    finally:
        sessions.release(fresh, url)
    assert conn.closed  # the ended one was closed, not kept


def _variant(url: str, n: int) -> str:
    """``url`` spelt another way (another key), for the same database."""
    return f"{url}{'&' if '?' in url else '?'}connect_timeout={10 + n}"


def test_a_few_are_kept_per_key_and_in_all_and_none_when_not_keeping(kept: str) -> None:
    url = kept
    opened = [sessions.session(url) for _ in range(sessions.PER_KEY + 2)]
    for conn in opened:
        sessions.release(conn, url)
    assert [c.closed for c in opened].count(0) == sessions.PER_KEY
    # Across keys, no more than TOTAL in all.
    urls = [_variant(url, n) for n in range(sessions.TOTAL // sessions.PER_KEY + 1)]
    more = [(u, sessions.session(u)) for u in urls for _ in range(sessions.PER_KEY)]
    for u, conn in more:
        sessions.release(conn, u)
    opened += [conn for _, conn in more]
    assert [c.closed for c in opened].count(0) == sessions.TOTAL
    sessions.close_all()
    assert all(c.closed for c in opened)

    sessions.stop_keeping()
    conn = sessions.session(url)
    sessions.release(conn, url)
    assert conn.closed  # not kept: closed as before


def _kept_session_pid(url: str) -> int:
    """A session kept for ``url`` (no reference to it left here); its backend pid."""
    conn = sessions.session(url, autocommit=True)
    pid = _pid(conn)
    sessions.release(conn, url)
    return pid


def test_a_forked_child_neither_uses_nor_ends_its_parents_sessions(kept: str) -> None:
    url = kept
    pid = _kept_session_pid(url)
    child = os.fork()
    if child == 0:  # the child: nothing kept, and its copy of the parent's session goes away
        code = 0
        try:
            if sessions._kept or sessions._enabled:  # noqa: SLF001
                code = 1
            sessions._inherited.clear()  # noqa: SLF001 - the child's last reference to its copy
            import gc

            gc.collect()  # its copy closed, as at a child's exit
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.WEXITSTATUS(status) == 0
    again = sessions.session(url, autocommit=True)  # the parent's session, still alive
    try:
        assert _pid(again) == pid
        assert query(again, "select 4") == [(4,)]
    finally:
        sessions.release(again, url)


PROBE = """
import json
from loader import sessions
from loader.runner import ScanOptions
from loader.scan import run_scan
import psycopg2

def kept():
    return {{str(key[0]): sorted(conn.get_backend_pid() for conn, _ in conns)
            for key, conns in sessions._kept.items()}}

sessions.keep()
out = []
for full in (True, False):
    result = run_scan(ScanOptions({tenant!r}, full_refresh=full))
    other = psycopg2.connect({url!r})
    other.autocommit = True
    with other.cursor() as cur:  # the tenant's lock is free once the scan has returned
        cur.execute("select pg_try_advisory_lock(hashtextextended(%s, 0))",
                    ("hubspot-loader:scan:" + {tenant!r},))
        free = cur.fetchone()[0]
        # Let go of it here: a closed session's locks go when its server process has ended,
        # and the next scan's try could come first (it did, on a busy machine).
        cur.execute("select pg_advisory_unlock_all()")
    other.close()
    out.append({{"status": result.status, "mode": result.mode, "free": free, "kept": kept()}})
sessions.close_all()
print(json.dumps([*out, {tenant!r}]))
"""


def test_two_scans_in_a_scan_process_run_on_the_same_sessions(database_url: str,
                                                              tmp_path: Path) -> None:
    first, second, tenant = scan_probe(PROBE, tmp_path, "sessions", deals=150, seed=9,
                                       url=database_url)
    assert [first["status"], second["status"]] == ["completed", "completed"]
    assert [first["mode"], second["mode"]] == ["full", "incremental"]
    assert first["free"] and second["free"]
    # After each scan the loader's sessions and dlt's are kept, and the second scan ran on the
    # first one's (the same server processes).
    assert first["kept"]["loader"] and first["kept"]["dlt"], first
    for key in ("loader", "dlt"):
        assert set(second["kept"][key]) & set(first["kept"][key]), (key, first, second)
    conn = connect(database_url)
    try:
        assert query(conn, "select count(distinct id) from raw_hubspot.deals "
                           "where _tenant_id = %s", (tenant,))[0][0] >= 150
    finally:
        conn.close()


def test_dlt_takes_a_kept_session_and_replaces_one_the_server_ended(kept: str) -> None:
    """dlt's sessions (``dlt_speedups._keep_dlt_sessions``): closing keeps it, opening takes
    it back with dlt's own reset, and one the server ended meanwhile is replaced."""
    from dlt.destinations import postgres
    from dlt.destinations.impl.postgres.sql_client import Psycopg2SqlClient

    from loader import dlt_speedups
    from loader.scan import _dlt_credentials

    dlt_speedups.install()
    client = Psycopg2SqlClient("raw_hubspot", "raw_hubspot_staging", _dlt_credentials(kept),
                               postgres().capabilities())
    pid = client.open_connection().get_backend_pid()
    client.close_connection()
    assert client._conn is None  # noqa: SLF001
    assert client.open_connection().get_backend_pid() == pid  # the kept one, reset
    assert client.execute_sql("show search_path") == [('"raw_hubspot",public',)]
    client.close_connection()

    admin = connect(kept)
    try:
        query(admin, "select pg_terminate_backend(%s)", (pid,))
    finally:
        admin.close()
    conn = client.open_connection()
    try:
        assert conn.get_backend_pid() != pid
        assert client.execute_sql("select 5") == [(5,)]
    finally:
        client.close_connection()
