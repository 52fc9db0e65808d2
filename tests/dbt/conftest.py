"""Fixtures of the warehouse tests: databases of their own on the session's server, dbt builds
into them through the loader's CLI, and a login member of the analyst role.

The warehouse tests write raw rows with SQL (what the loader's dlt pipelines would land), so that
each edge case is exact and the 200,000-deal plan test is fast; the loader itself is covered by
tests/e2e.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from loader import transform

# connect, with_database and with_user live in tests/conftest.py (the session's fixtures use
# them too); the warehouse tests take them from here as well.
from tests.conftest import ROOT, connect, with_database, with_user  # noqa: F401
from tests.dbt import raw_data

ANALYST_ROLE = "hubspot_analyst"


def run_loader_cli(url: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m loader ARGS`` against database ``url``; fails the test if it fails."""
    env = dict(os.environ, DATABASE_URL=url)
    proc = subprocess.run([sys.executable, "-m", "loader", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        lines = proc.stdout.splitlines()
        failures = [ln for i, ln in enumerate(lines)
                    if any(mark in near for near in lines[max(i - 6, 0):i + 1]
                           for mark in ("Failure in", "Error in"))]
        pytest.fail(f"python -m loader {' '.join(args)} failed: "
                    + "\n".join(failures[-60:] or lines[-40:]) + proc.stderr[-1000:])
    return proc


_BUILDERS: dict[str, transform.Builder] = {}


def build_in_process(url: str, *args: str) -> transform.BuildResult:
    """``python -m loader transform ARGS`` (``--full-refresh``, ``--select ...``) run in this
    process through the same :class:`loader.transform.Builder` the command uses, one per
    database, keeping its parsed project: a build without dbt's start-up (seconds each, and the
    warehouse tests build dozens of times). Fails the test if the build fails."""
    select: list[str] | None = None
    if "--select" in args:
        select = list(args[args.index("--select") + 1:])
    builder = _BUILDERS.setdefault(url, transform.Builder(url))
    result = builder.build(full_refresh="--full-refresh" in args, select=select, quiet=True)
    if not result.ok:
        pytest.fail(f"transform {' '.join(args)} failed: {result.error}")
    return result


def _dbt_node_results(url: str, *args: str) -> list[Any]:
    """dbt's result of each node ``python -m loader dbt ARGS`` ran on database ``url``, through
    the database's :class:`loader.transform.Builder`; fails the test if dbt raised instead."""
    result = _BUILDERS.setdefault(url, transform.Builder(url)).invoke(*args)
    if result.exception is not None or result.result is None:
        pytest.fail(f"dbt {' '.join(args)} did not run: {result.exception}")
    return list(result.result.results)


def dbt_in_process(url: str, *args: str) -> dict[str, str]:
    """``python -m loader dbt ARGS`` on database ``url`` without dbt's start-up: through the
    database's :class:`loader.transform.Builder` (see :func:`build_in_process`). The status of
    each node dbt ran (``pass``, ``fail``, ``error``, ``success``, ...) by node name; fails the
    test if dbt raised instead of running them."""
    return {r.node.name: str(r.status) for r in _dbt_node_results(url, *args)}


def dbt_run_in_process(url: str, *args: str) -> None:
    """``python -m loader dbt run ARGS`` on database ``url`` without dbt's start-up (see
    :func:`dbt_in_process`); fails the test unless every node it ran succeeded."""
    results = _dbt_node_results(url, "run", *args)
    failed = [f"{r.node.name}: {r.status}: {r.message}" for r in results
              if str(r.status) != "success"]
    if failed or not results:
        pytest.fail(f"dbt run {' '.join(args)} failed: " + "; ".join(failed or ["no node ran"]))


@pytest.fixture(scope="session")
def analyst_login(database_url: str) -> Iterator[str]:
    """A LOGIN role that is only a member of hubspot_analyst (not superuser, no BYPASSRLS, owns
    nothing); dropped at the end. Roles are cluster-wide: the name is unique per session."""
    name = f"analyst_{uuid.uuid4().hex[:8]}"
    admin = connect(database_url)
    try:
        with admin.cursor() as cur:
            cur.execute(
                "do $$ begin if not exists (select from pg_roles where rolname = %s) then "
                f"create role {ANALYST_ROLE} nologin; end if; end $$",
                (ANALYST_ROLE,),
            )
            cur.execute(f'create role "{name}" login nosuperuser nobypassrls inherit')
            cur.execute(f'grant {ANALYST_ROLE} to "{name}"')
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'drop role if exists "{name}"')
        admin.close()


def execute(url: str, sql: str) -> None:
    """Run ``sql`` on database ``url`` as its owner, committed (tampering with a mart, say)."""
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def relation_tenant_columns(conn: psycopg2.extensions.connection) -> dict[str, str]:
    """Every table and view in analytics with its tenant column (organization_id in scan_jobs,
    _tenant_id elsewhere)."""
    with conn.cursor() as cur:
        cur.execute(
            "select c.relname, case when exists (select from pg_attribute a where "
            "a.attrelid = c.oid and a.attname = '_tenant_id' and not a.attisdropped) "
            "then '_tenant_id' else 'organization_id' end "
            "from pg_class c where c.relnamespace = 'analytics'::regnamespace "
            "and c.relkind in ('r', 'v', 'p', 'm') order by 1"
        )
        return dict(cur.fetchall())




CATALOG_QUERIES = {
    "indexes": """
        select table_class.relname, index_class.relname, pg_get_indexdef(index_info.indexrelid)
        from pg_index as index_info
        join pg_class as index_class on index_class.oid = index_info.indexrelid
        join pg_class as table_class on table_class.oid = index_info.indrelid
        where table_class.relnamespace = 'analytics'::regnamespace
    """,
    "constraints": """
        select conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        from pg_constraint where connamespace = 'analytics'::regnamespace
    """,
    "policies": """
        select tablename, policyname, permissive, roles::text, cmd, qual, with_check
        from pg_policies where schemaname = 'analytics'
    """,
    "grants": """
        select relation.relname, acl.grantee::regrole::text, acl.privilege_type
        from pg_class as relation, aclexplode(relation.relacl) as acl
        where relation.relnamespace = 'analytics'::regnamespace and acl.grantee <> 0
        union all
        select 'schema analytics', acl.grantee::regrole::text, acl.privilege_type
        from pg_namespace as ns, aclexplode(ns.nspacl) as acl
        where ns.nspname = 'analytics'
    """,
    "security": """
        select relname, relkind::text, relrowsecurity, relforcerowsecurity,
               coalesce(reloptions::text, '')
        from pg_class where relnamespace = 'analytics'::regnamespace
            and relkind in ('r', 'v', 'p', 'm')
    """,
    "statistics": """
        select stxrelid::regclass::text, stxname, pg_get_statisticsobjdef(oid)
        from pg_statistic_ext where stxnamespace = 'analytics'::regnamespace
    """,
    "defaults": """
        select relation.relname, attribute.attname, pg_get_expr(adbin, adrelid)
        from pg_attrdef
        join pg_class as relation on relation.oid = adrelid
        join pg_attribute as attribute on attribute.attrelid = adrelid and attnum = adnum
        where relation.relnamespace = 'analytics'::regnamespace
    """,
}


def catalog_snapshot(url: str) -> dict[str, set[tuple[object, ...]]]:
    """What a build leaves in analytics' catalog: indexes (with definitions), constraints,
    policies, grants, RLS and view options, column defaults."""
    conn = connect(url)
    try:
        snapshot = {}
        with conn.cursor() as cur:
            for name, sql in CATALOG_QUERIES.items():
                cur.execute(sql)
                snapshot[name] = set(cur.fetchall())
        return snapshot
    finally:
        conn.close()


DEAL_ROWS = "select * from analytics.deals order by _tenant_id, id"

#: The other incremental marts, compared between the incremental and the --full-refresh build.
INCREMENTAL_MART_ROWS = {
    "deal_stage_history": "select * from analytics.deal_stage_history "
                          "order by _tenant_id, deal_id, valid_from",
    "deals_quarantine": "select * from analytics.deals_quarantine order by raw_row_id, reason",
}


def fetch(url: str, sql: str, params: object = None) -> list[tuple[object, ...]]:
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


class Warehouse:
    """The scenario database after each build: catalog snapshots and deal rows per stage."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.catalogs: dict[str, dict[str, set[tuple[object, ...]]]] = {}
        self.deals: dict[str, list[tuple[object, ...]]] = {}
        self.marts: dict[str, dict[str, list[tuple[object, ...]]]] = {}
        self.failed_items: dict[str, dict[str, int]] = {}
        self.times: dict[str, datetime] = {}

    def build(self, stage: str, *extra: str, with_data_tests: bool = True) -> None:
        """``python -m loader transform`` (dbt build, then the quarantine count and the vacuum
        of the marts); or, to save time where the dbt data tests already ran on the same rows,
        ``dbt run`` followed by the same two steps the transform command runs."""
        if with_data_tests:
            build_in_process(self.url, *extra)
        else:
            dbt_run_in_process(self.url, *extra)
            transform.count_quarantined(self.url)
            transform.vacuum_marts(self.url)
        self.catalogs[stage] = catalog_snapshot(self.url)
        self.deals[stage] = fetch(self.url, DEAL_ROWS)
        self.marts[stage] = {name: fetch(self.url, sql)
                             for name, sql in INCREMENTAL_MART_ROWS.items()}
        self.failed_items[stage] = dict(
            fetch(self.url, "select id, failed_items from loader.scan_jobs")  # type: ignore[arg-type]
        )


@pytest.fixture(scope="session")
def warehouse(scratch_databases) -> Warehouse:  # type: ignore[no-untyped-def]
    """Two tenants sharing deal ids, built three times: first build, incremental build after
    a second round of scans, --full-refresh. See tests/dbt/scenario.py for the rows."""
    from tests.dbt import scenario

    url = scratch_databases("warehouse")
    house = Warehouse(url)
    conn = connect(url, autocommit=False)
    try:
        raw_data.create_raw_tables(conn)
        scenario.first_round(conn, house.times)
        house.build("first", with_data_tests=False)
        scenario.second_round(conn, house.times)
        house.build("incremental")
        house.build("full_refresh", "--full-refresh")
    finally:
        conn.close()
    return house
