"""A database created before 2026-12-07 has dlt's unique key on the stage history's ``_dlt_id``;
the next scan drops it (``loader.scan.drop_legacy_history_key``), without waiting long for the
table's lock and without failing when it cannot. Real PostgreSQL (a database of the test's own,
so the session's shared raw tables are never touched), a real scan against the sandbox."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import psycopg2
import pytest

from loader.sandbox import SandboxServer
from loader.scan import LEGACY_HISTORY_KEY, drop_legacy_history_key
from tests.conftest import connect, query, unique_tenant, write_tenants_file

HISTORY = "raw_hubspot.deals_stage_history"


def _has_key(conn: psycopg2.extensions.connection) -> bool:
    return query(conn, "select exists (select from pg_constraint where conname = %s "
                       "and conrelid = to_regclass(%s))", (LEGACY_HISTORY_KEY, HISTORY))[0][0]


def _legacy_table(conn: psycopg2.extensions.connection) -> None:
    """The history table as dlt created it before (the columns that matter here)."""
    with conn.cursor() as cur:
        cur.execute("create schema if not exists raw_hubspot")
        cur.execute(f"create table {HISTORY} (value text, _dlt_parent_id text not null, "
                    f"_dlt_id text not null, constraint {LEGACY_HISTORY_KEY} unique (_dlt_id))")


def test_the_key_is_dropped_once_and_a_held_lock_only_defers_it(
        scratch_databases, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    url = scratch_databases("legacykey")
    conn = connect(url, autocommit=False)
    admin = connect(url)
    holder = connect(url, autocommit=False)
    try:
        assert drop_legacy_history_key(conn, url) is False  # no table at all: nothing to do
        _legacy_table(admin)
        assert _has_key(admin)

        # A build reading the table (any lock that conflicts): the scan waits a second at most,
        # leaves the key, and goes on.
        with holder.cursor() as cur:
            cur.execute(f"lock table {HISTORY} in access share mode")
        caplog.set_level(logging.WARNING, logger="loader.scan")
        started = time.monotonic()
        assert drop_legacy_history_key(conn, url) is False
        assert time.monotonic() - started < 10
        assert _has_key(admin)
        assert f"unique key {LEGACY_HISTORY_KEY} not dropped now" in caplog.text
        assert "lock timeout" in caplog.text
        holder.rollback()

        assert drop_legacy_history_key(conn, url) is True
        assert not _has_key(admin)
        assert drop_legacy_history_key(conn, url) is False  # gone: the catalog says so
        # The scan's connection is left as it was given: no transaction open on it.
        assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    finally:
        for c in (conn, admin, holder):
            c.close()


def test_the_next_scan_drops_it_and_loads_as_before(
        run_loader, scratch_databases, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = scratch_databases("legacyscan")
    tenant = unique_tenant("legacykey")
    token = "tok-legacykey-0123456789abcdef"
    env = {**write_tenants_file(tmp_path / "tenants.toml", {tenant: token}), "DATABASE_URL": url}
    admin = connect(url)
    try:
        with SandboxServer(portals={tenant: token}, deals=300, seed=53) as sandbox:
            env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
            first = run_loader("run", "--tenant", tenant, "--no-transform", env=env)
            assert first.returncode == 0, first.stderr
            assert not _has_key(admin)  # created without it
            with admin.cursor() as cur:  # as a database created before would have it
                cur.execute(f"alter table {HISTORY} add constraint {LEGACY_HISTORY_KEY} "
                            "unique (_dlt_id)")
            again = run_loader("-v", "run", "--tenant", tenant, "--no-transform",
                               "--full-refresh", env=env)
            assert again.returncode == 0, again.stderr
        assert not _has_key(admin)
        assert f"dropped the unique key {LEGACY_HISTORY_KEY}" in again.stderr
        # Both scans' history landed, each entry once.
        rows, distinct = query(admin, f"select count(*), count(distinct _dlt_id) from {HISTORY}")[0]
        assert rows == distinct > 0
        assert query(admin, "select count(distinct d._scan_id) from raw_hubspot.deals as d "
                            f"join {HISTORY} as h on h._dlt_parent_id = d._dlt_id") == [(2,)]
    finally:
        admin.close()
