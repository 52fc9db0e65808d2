"""The seed's common deal queries (``deals-schema.md``, "Deals Management") against
``analytics.deals``: as a login member of ``hubspot_analyst`` under row-level security, and as the
owner (who bypasses RLS), each timed many times; median and p95 in milliseconds.

Both runs send the same SQL text, tenant filter included, as the seed writes it; under RLS the
policy adds its own ``_tenant_id = current_setting('app.current_tenant_id')`` on top.

When the warehouse built by the scans is smaller than asked for (``--query-deals``), the rows are
generated directly with SQL into ``analytics.deals`` (copies of the scanned rows under new tenant
ids), so the queries can be measured at 1,000,000 deals without scanning them; the output says so.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from typing import Any

from .harness import BenchEnv

ANALYST_ROLE = "hubspot_analyst"
BENCH_LOGIN = "loader_bench_analyst"

#: name -> SQL; %(tenant)s, %(job)s, %(since)s and %(until)s are filled per run.
QUERIES: dict[str, str] = {
    "page_of_scan": """
        select id, dealname, amount, dealstage, pipeline, createdate, closedate, dealtype, archived
        from analytics.deals
        where scan_job_id = %(job)s and _tenant_id = %(tenant)s
        order by createdate desc
        limit 100 offset 0""",
    "count_by_stage": """
        select dealstage, count(*) as count
        from analytics.deals
        where _tenant_id = %(tenant)s and archived = false
        group by dealstage
        order by count desc""",
    "search_by_name": """
        select id, dealname, amount, dealstage, createdate
        from analytics.deals
        where _tenant_id = %(tenant)s and dealname ilike '%%enterprise%%'
        order by createdate desc""",
    "date_range": """
        select id, dealname, amount, dealstage, closedate
        from analytics.deals
        where _tenant_id = %(tenant)s
          and createdate >= %(since)s and createdate < %(until)s
          and archived = false
        order by createdate desc""",
    "pipeline_stage": """
        select pipeline, dealstage, count(*) as count, sum(amount) as total_amount
        from analytics.deals
        where _tenant_id = %(tenant)s and pipeline = 'default' and archived = false
        group by pipeline, dealstage
        order by pipeline, dealstage""",
    "closed_by_month": """
        select date_trunc('month', closedate) as month, count(*) as closed_deals,
               sum(amount) as total_revenue
        from analytics.deals
        where _tenant_id = %(tenant)s and closedate is not null and closedate >= %(since)s
        group by date_trunc('month', closedate)
        order by month desc""",
    "custom_property": """
        select id, dealname, properties->>'custom_region' as custom_value
        from analytics.deals
        where _tenant_id = %(tenant)s and properties->>'custom_region' is not null""",
}


def _available(env: BenchEnv) -> str | None:
    """Why the RLS query section cannot run, or None when it can."""
    with env.cursor() as cur:
        cur.execute("select to_regclass('analytics.deals') is not null")
        if not cur.fetchone()[0]:
            return "analytics.deals does not exist (dbt build failed or not run)"
        cur.execute("select 1 from pg_roles where rolname = %s", (ANALYST_ROLE,))
        if cur.fetchone() is None:
            return f"role {ANALYST_ROLE} does not exist (the dbt project does not create it yet)"
        cur.execute("select relrowsecurity from pg_class where oid = 'analytics.deals'::regclass")
        if not cur.fetchone()[0]:
            return "analytics.deals has no row-level security (the dbt project does not enable it)"
    return None


def _synthesise(env: BenchEnv, deals: int, tenants: int) -> dict[str, Any]:
    """Grow ``analytics.deals`` to ``deals`` rows over ``tenants`` tenants by copying the scanned
    rows under generated tenant ids (``qbench-NNN``). Returns what was added.

    The rows are inserted tenant after tenant, as a dbt build writes them (its window functions
    partition by tenant: one tenant's rows land on neighbouring pages), and the table is then
    vacuumed and analyzed, as the loader does after each build."""
    with env.cursor() as cur:
        cur.execute("select count(*), count(distinct _tenant_id) from analytics.deals")
        have, have_tenants = cur.fetchone()
        if have >= deals or have == 0:
            return {"synthetic_rows": 0}
        new_tenants = max(0, tenants - int(have_tenants))
        if new_tenants == 0:
            return {"synthetic_rows": 0}
        # Exactly ``deals`` rows in all: the generated tenants share what the scanned ones lack.
        per_tenant, extra = divmod(deals - have, new_tenants)
        cur.execute("""
            create temporary table bench_source as
            select row_number() over (order by _tenant_id, id) - 1 as n, d.*
            from analytics.deals as d""")
        cur.execute("select count(*) from bench_source")
        source_rows = cur.fetchone()[0]
        cur.execute("""
            select string_agg(quote_ident(column_name), ', ' order by ordinal_position)
            from information_schema.columns
            where table_schema = 'analytics' and table_name = 'deals'""")
        columns = cur.fetchone()[0]
        names = [c.strip() for c in columns.split(",")]
        select_list = ", ".join(
            "t.tenant" if n.strip('"') == "_tenant_id" else
            "(g.i + 1)::text" if n.strip('"') == "id" else f"s.{n}"
            for n in names)
        started = time.perf_counter()
        cur.execute(f"""
            insert into analytics.deals ({columns})
            select {select_list}
            from generate_series(1, %(new_tenants)s) as t0(k0)
            cross join lateral (
                select format('qbench-%%s', lpad(t0.k0::text, 3, '0')) as tenant, t0.k0 as k
            ) as t
            cross join lateral generate_series(
                0, %(per_tenant)s - 1 + (t.k <= %(extra)s)::int) as g(i)
            join bench_source as s on s.n = (g.i + t.k * 7919) %% %(source_rows)s
            order by t.tenant, g.i""",
                    {"new_tenants": new_tenants, "per_tenant": per_tenant, "extra": extra,
                     "source_rows": source_rows})
        added = cur.rowcount
        # What the loader's transform does after each dbt build (loader.transform.vacuum_marts).
        cur.execute("vacuum (analyze) analytics.deals")
        seconds = time.perf_counter() - started
        cur.execute("drop table bench_source")
    return {"synthetic_rows": added, "synthetic_tenants": new_tenants,
            "synthetic_seconds": round(seconds, 1)}


def _wait_for_autovacuum(env: BenchEnv, timeout: float = 180.0) -> dict[str, Any]:
    """Wait until no autovacuum worker runs, so that none shares the two cores with the timed
    connections (the scans before, ``make bench``'s memory section last, add hundreds of
    thousands of raw rows, which autovacuum may take up). Returns what it found and how long it
    waited; after ``timeout`` it times anyway and says so."""
    started = time.perf_counter()
    seen: set[str] = set()
    with env.cursor() as cur:
        while True:
            cur.execute("select coalesce(array_agg(query), '{}') from pg_stat_activity "
                        "where backend_type = 'autovacuum worker'")
            running = cur.fetchone()[0]
            seen.update(running)
            waited = time.perf_counter() - started
            if not running or waited >= timeout:
                break
            time.sleep(0.5)
    return {"autovacuum_waited_seconds": round(waited, 1),
            "autovacuum_seen": sorted(seen)[:10],
            "autovacuum_still_running": bool(running)}


def _ensure_login(env: BenchEnv) -> None:
    with env.cursor() as cur:
        cur.execute("select 1 from pg_roles where rolname = %s", (BENCH_LOGIN,))
        if cur.fetchone() is None:
            cur.execute(f"create role {BENCH_LOGIN} login")
        cur.execute(f"grant {ANALYST_ROLE} to {BENCH_LOGIN}")


def _pick_params(env: BenchEnv, count: int) -> list[dict[str, Any]]:
    """Per-run parameters: tenants (largest first, rotating), the tenant's latest scan job (the
    one an operator pages through after a run; in ``make bench`` the incremental scan, whose rows
    are spread thinly over the tenant's: the slow case for page_of_scan), a year."""
    with env.cursor() as cur:
        cur.execute("""
            with latest_job as (
                select distinct on (_tenant_id) _tenant_id, scan_job_id
                from analytics.deals order by _tenant_id, _extracted_at desc, scan_job_id
            )
            select d._tenant_id, j.scan_job_id, min(d.createdate), max(d.createdate)
            from analytics.deals as d join latest_job as j using (_tenant_id)
            group by d._tenant_id, j.scan_job_id order by count(*) desc, d._tenant_id
            limit %s""", (count,))
        rows = cur.fetchall()
    out = []
    for tenant, job, lo, hi in rows:
        mid = lo + (hi - lo) / 2 if lo and hi else None
        since = mid.replace(month=1, day=1) if mid else "2024-01-01"
        until = since.replace(year=since.year + 1) if mid else "2025-01-01"
        out.append({"tenant": tenant, "job": job, "since": since, "until": until})
    return out


def _time_pair(env: BenchEnv, params: list[dict[str, Any]], repeats: int
               ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]:
    """Each query timed as the owner and as the analyst, run by run in turn (which of the two
    goes first alternates), so that both see the same moment's machine: two passes minutes apart
    compared the machine's load as much as RLS. Python's garbage collector is off while they
    run, as ``timeit`` has it (the rows fetched are freed as they go; a collection pass in the
    middle of one timing is client noise).

    Before a query's ``repeats`` timed runs, one run per tenant of ``params`` (the first role of
    each pair reads the tenant's pages into PostgreSQL's buffers, the second finds them there):
    with fewer warm-up runs than tenants, the timed runs' p95 was whichever role met a tenant
    first, as many first visits as the tail holds (17 of 200 runs with 20 tenants and three
    warm-up runs). Those first runs are returned too, as the cold figures.

    Returns (owner, analyst, first) timings in ms; ``first`` holds the first run of each pair of
    the warm-up pass."""
    owner_conn = env.connect(autocommit=True)
    analyst_conn = env.connect(autocommit=True)
    owner: dict[str, list[float]] = {name: [] for name in QUERIES}
    rls: dict[str, list[float]] = {name: [] for name in QUERIES}
    first: dict[str, list[float]] = {name: [] for name in QUERIES}
    warm_up = len(params)
    gc.collect()
    gc.disable()
    try:
        with owner_conn.cursor() as owner_cur, analyst_conn.cursor() as analyst_cur:
            analyst_cur.execute(f"set role {BENCH_LOGIN}")
            for name, sql in QUERIES.items():
                for k in range(warm_up + repeats):
                    p = params[k % len(params)]
                    analyst_cur.execute("select set_config('app.current_tenant_id', %s, false)",
                                        (p["tenant"],))
                    turns = [(owner_cur, owner[name]), (analyst_cur, rls[name])]
                    for turn, (cur, timings) in enumerate(turns if k % 2 == 0 else turns[::-1]):
                        started = time.perf_counter()
                        cur.execute(sql, p)
                        cur.fetchall()
                        elapsed = (time.perf_counter() - started) * 1000
                        if k >= warm_up:
                            timings.append(elapsed)
                        elif turn == 0:
                            first[name].append(elapsed)
    finally:
        gc.enable()
        owner_conn.close()
        analyst_conn.close()
    return owner, rls, first


def _stats(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return round(statistics.median(ordered), 3), round(p95, 3)


def query_latency(env: BenchEnv, *, deals: int, tenants: int, repeats: int) -> dict[str, Any]:
    """Median and p95 ms per seed query, under RLS as an analyst and as the owner."""
    missing = _available(env)
    if missing:
        return {"available": False, "note": f"not available: {missing}"}
    grown = _synthesise(env, deals, tenants)
    with env.cursor() as cur:
        cur.execute("select count(*), count(distinct _tenant_id) from analytics.deals")
        rows, tenant_count = cur.fetchone()
        cur.execute("show shared_buffers")
        shared_buffers = cur.fetchone()[0]
        # The custom-property indexes the build made (LOADER_INDEXED_PROPERTIES, bench option
        # --indexed-properties).
        cur.execute(r"""
            select coalesce(array_agg(indexname::text order by indexname), '{}')
            from pg_indexes
            where schemaname = 'analytics' and tablename = 'deals'
                and indexname like 'idx\_deals\_prop\_%'""")
        property_indexes = cur.fetchone()[0]
        # The build (and the generated rows) left dirty pages behind: written out now, by
        # PostgreSQL's checkpoint and the kernel's writeback, not in the middle of the timings.
        checkpoint_started = time.perf_counter()
        cur.execute("checkpoint")
        os.sync()
        checkpoint_seconds = round(time.perf_counter() - checkpoint_started, 2)
    autovacuum_wait = _wait_for_autovacuum(env)
    _ensure_login(env)
    params = _pick_params(env, min(tenant_count, 20))
    owner, rls, first = _time_pair(env, params, repeats)
    # Isolation check: the analyst sees only the tenant set for the session.
    conn = env.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"set role {BENCH_LOGIN}")
            cur.execute("select set_config('app.current_tenant_id', %s, false)",
                        (params[0]["tenant"],))
            cur.execute("select count(distinct _tenant_id) from analytics.deals")
            visible_tenants = cur.fetchone()[0]
    finally:
        conn.close()
    per_query = {}
    for name in QUERIES:
        om, op = _stats(owner[name])
        am, ap = _stats(rls[name])
        per_query[name] = {
            "rls_median_ms": am, "rls_p95_ms": ap,
            "owner_median_ms": om, "owner_p95_ms": op,
            "rls_ratio_median": round(am / om, 3) if om else None,
            "rls_ratio_p95": round(ap / op, 3) if op else None,
            "first_visit_median_ms": round(statistics.median(first[name]), 3),
            "first_visit_max_ms": round(max(first[name]), 3),
        }
    return {
        "available": True,
        "rows": int(rows),
        "tenants": int(tenant_count),
        "repeats": repeats,
        "analyst_visible_tenants": int(visible_tenants),
        "method": (f"as {BENCH_LOGIN} (member of {ANALYST_ROLE}, app.current_tenant_id set) "
                   "vs as the owner, run by run in turn; same SQL; client-side wall time incl. "
                   "fetch; timed after one warm-up run per tenant (first_visit_*: those runs)"),
        "measured_tenants": len(params),
        "checkpoint_seconds": checkpoint_seconds,
        **autovacuum_wait,
        "shared_buffers": shared_buffers,
        "property_indexes": property_indexes,
        **grown,
        "queries": per_query,
        "max_rls_p95_ms": max(q["rls_p95_ms"] for q in per_query.values()),
        "max_rls_ratio_p95": max((q["rls_ratio_p95"] or 0) for q in per_query.values()),
    }
