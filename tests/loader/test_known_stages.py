"""``StageLookup``: the stored stage of each deal of one tenant, from ``analytics.deals``, over
one connection for the whole scan; nothing before the mart exists."""

from __future__ import annotations

import time

import psycopg2
import psycopg2.extensions

from loader.known_stages import StageLookup


def _loader_sessions(conn: psycopg2.extensions.connection) -> list[int]:
    """Backend pids of the loader's sessions (other than ``conn``) on ``conn``'s database."""
    with conn.cursor() as cur:
        cur.execute("select pid from pg_stat_activity where datname = current_database() "
                    "and pid <> pg_backend_pid() order by pid")
        return [pid for (pid,) in cur.fetchall()]


def test_stored_stages_of_one_tenant_over_one_connection(
    scratch_databases,  # type: ignore[no-untyped-def]
) -> None:
    url = scratch_databases("stages")
    lookup = StageLookup(url, "acme")
    assert lookup([]) == {}  # nothing asked: no session either
    assert lookup(["1", "2"]) == {}  # no mart yet: every deal's history is fetched

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("create schema analytics")
        cur.execute("create table analytics.deals (_tenant_id text, id text, dealstage text)")
        cur.execute("insert into analytics.deals values ('acme', '1', 'won'), "
                    "('acme', '2', null), ('other', '3', 'lost')")
    try:
        first = _loader_sessions(conn)
        assert len(first) == 1  # opened by the first lookup, kept
        assert lookup(["1", "2", "3", "4"]) == {"1": "won", "2": None}  # the mart appeared
        for _ in range(5):
            assert lookup(["3", "1"]) == {"1": "won"}  # another tenant's deal: not there
            assert _loader_sessions(conn) == first  # the same session for every page

        with conn.cursor() as cur:
            cur.execute("drop table analytics.deals")
        assert lookup(["1"]) == {}  # dropped by hand: as if never built
        with conn.cursor() as cur:
            cur.execute("create table analytics.deals (_tenant_id text, id text, dealstage text)")
            cur.execute("insert into analytics.deals values ('acme', '1', 'lost')")
        assert lookup(["1"]) == {"1": "lost"}
    finally:
        lookup.close()
        lookup.close()  # twice: nothing left to close
    deadline = time.monotonic() + 10  # a closed session's backend exits just after
    while _loader_sessions(conn) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _loader_sessions(conn) == []  # closed
    conn.close()
