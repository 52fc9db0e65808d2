"""Each common query of the seed uses an index on 200,000 deals over 20 tenants, as an analyst
sees it (row-level security on, the tenant set). The rows are generated with SQL in a database
of their own on the session's server and built by dbt like any other. Then, vacuumed as the
loader's transform leaves it, the per-tenant aggregates and listings are answered by our covering
indexes alone (index-only scans, no heap fetch)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

import psycopg2.extensions
import pytest

from loader import transform
from tests.dbt import raw_data
from tests.dbt.conftest import connect, dbt_run_in_process, with_user

TENANTS, DEALS, JOBS_PER_TENANT = 20, 200_000, 100
TENANT = "tenant-07"
JOB = "job-07-042"
#: A full scan's job: the latest version of nine in ten of each tenant's deals comes from its
#: first (full) scan, job 000, the others from the 98 incremental scans after it.
FULL_JOB = "job-07-000"
JOB_OF_DEAL = (f"case when (g / {TENANTS}) % 10 <> 0 then 0 "
               f"else 1 + ((g / {TENANTS}) / 10) % {JOBS_PER_TENANT - 2} end")

GENERATE = f"""
insert into loader.scan_jobs (id, scan_id, status, scan_type, config, organization_id,
    started_at, completed_at, total_items, processed_items, failed_items, created_at, updated_at)
select
    format('job-%s-%s', lpad(t::text, 2, '0'), lpad(j::text, 3, '0')),
    format('scan-%s-%s', lpad(t::text, 2, '0'), lpad(j::text, 3, '0')),
    case when j = {JOBS_PER_TENANT - 1} and t % 5 = 0 then 'running' else 'completed' end,
    case when j % 10 = 0 then 'deals_full' else 'deals_incremental' end,
    '{{}}', format('tenant-%s', lpad(t::text, 2, '0')),
    now() - make_interval(days => {JOBS_PER_TENANT} - j),
    case when j = {JOBS_PER_TENANT - 1} and t % 5 = 0 then null
         else now() - make_interval(days => {JOBS_PER_TENANT} - j) + interval '5 minutes' end,
    {DEALS // TENANTS}, {DEALS // TENANTS}, 0,
    now() - make_interval(days => {JOBS_PER_TENANT} - j),
    now() - make_interval(days => {JOBS_PER_TENANT} - j)
from generate_series(0, {TENANTS - 1}) as t, generate_series(0, {JOBS_PER_TENANT - 2}) as j;

insert into loader.scan_jobs (id, scan_id, status, scan_type, config, organization_id,
    created_at, updated_at)
select format('job-%s-099', lpad(t::text, 2, '0')), format('scan-%s-099', lpad(t::text, 2, '0')),
    'running', 'deals_incremental', '{{}}', format('tenant-%s', lpad(t::text, 2, '0')), now(), now()
from generate_series(0, {TENANTS - 1}) as t;

insert into raw_hubspot.deals (id, properties, created_at, updated_at, archived, _tenant_id,
    _scan_id, _scan_job_id, _extracted_at, _dlt_id)
select
    (g / {TENANTS})::text,
    jsonb_strip_nulls(jsonb_build_object(
        'dealname', case when g % 50 = 7 then 'Enterprise deal ' else 'Deal ' end || g,
        'amount', ((g * 37) % 100000)::text || '.50',
        'pipeline', case when g % 4 = 0 then '777' else 'default' end,
        'dealstage', case when g % 4 = 0 then (array['1001', '1002'])[1 + g % 2]
            else (array['appointmentscheduled', 'contractsent', 'closedwon', 'closedlost'])
                [1 + (g / 4) % 4] end,
        'createdate', to_char(timestamp '2022-01-01' + make_interval(hours => g % 26000),
                              'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'closedate', case when g % 3 = 0 then to_char(timestamp '2022-02-01'
            + make_interval(hours => g % 26000), 'YYYY-MM-DD') end,
        'custom_field_name', case when g % 100 = 7 then 'v' || g end,
        'custom_region', case when g % 7 <> 0 then (array['EMEA', 'AMER', 'APAC'])[1 + g % 3] end
    )),
    timestamptz '2024-01-01', timestamptz '2024-06-01' + make_interval(secs => g),
    g % 10 = 0,
    format('tenant-%s', lpad((g % {TENANTS})::text, 2, '0')),
    format('scan-%s-%s', lpad((g % {TENANTS})::text, 2, '0'), lpad(({JOB_OF_DEAL})::text, 3, '0')),
    format('job-%s-%s', lpad((g % {TENANTS})::text, 2, '0'), lpad(({JOB_OF_DEAL})::text, 3, '0')),
    now() - interval '1 hour',
    'gen' || g
from generate_series(0, {DEALS - 1}) as g;
"""

#: The seed's "Common Queries" (and its EXPLAIN example), with the relation each must reach
#: through an index. Tenant and ids are this data set's.
QUERIES: dict[str, tuple[str, str]] = {
    "scan job by scan_id": ("scan_jobs", """
        select id, scan_id, status, scan_type, total_items, processed_items
        from analytics.scan_jobs where scan_id = 'scan-07-042'"""),
    "active scans": ("scan_jobs", """
        select scan_id, status, started_at, scan_type from analytics.scan_jobs
        where status in ('running', 'pending') order by created_at desc"""),
    "scan progress": ("scan_jobs", """
        select scan_id, total_items, processed_items,
            case when total_items > 0 then round((processed_items * 100.0 / total_items), 2)
            else 0 end as progress_percentage
        from analytics.scan_jobs where scan_id = 'scan-07-042'"""),
    "paginated deals of a scan": ("deals", f"""
        select id, dealname, amount, dealstage, pipeline, createdate, closedate, dealtype,
            archived
        from analytics.deals where scan_job_id = '{JOB}' and _tenant_id = '{TENANT}'
        order by createdate desc limit 100 offset 0"""),
    "deals by stage": ("deals", f"""
        select dealstage, count(*) as count from analytics.deals
        where _tenant_id = '{TENANT}' and archived = false
        group by dealstage order by count desc"""),
    "search by name": ("deals", f"""
        select id, dealname, amount, dealstage, createdate from analytics.deals
        where _tenant_id = '{TENANT}' and dealname ilike '%enterprise%'
        order by createdate desc"""),
    "deals by date range": ("deals", f"""
        select id, dealname, amount, dealstage, closedate from analytics.deals
        where _tenant_id = '{TENANT}' and createdate >= '2024-01-01'
            and createdate < '2024-12-31' and archived = false
        order by createdate desc"""),
    "pipeline and stage": ("deals", f"""
        select pipeline, dealstage, count(*) as count, sum(amount) as total_amount
        from analytics.deals
        where _tenant_id = '{TENANT}' and pipeline = 'default' and archived = false
        group by pipeline, dealstage order by pipeline, dealstage"""),
    "closed deals by month": ("deals", f"""
        select date_trunc('month', closedate) as month, count(*) as closed_deals,
            sum(amount) as total_revenue
        from analytics.deals
        where _tenant_id = '{TENANT}' and closedate is not null and closedate >= '2024-01-01'
        group by date_trunc('month', closedate) order by month desc"""),
    "custom property": ("deals", f"""
        select id, dealname, properties ->> 'custom_field_name' as custom_value
        from analytics.deals
        where _tenant_id = '{TENANT}' and properties ->> 'custom_field_name' is not null"""),
    "stage and close date (seed's EXPLAIN example)": ("deals", f"""
        select * from analytics.deals
        where _tenant_id = '{TENANT}' and dealstage = 'closedwon'
            and closedate >= '2024-01-01'"""),
}


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def _explained(conn: psycopg2.extensions.connection, sql: str, *, analyze: bool = False
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``sql``'s plan on ``conn`` (run, with ``analyze``) and its nodes that read deals."""
    with conn.cursor() as cur:
        cur.execute(f"explain ({'analyze, ' if analyze else ''}format json) {sql}")
        plan = cur.fetchone()[0][0]["Plan"]
    return plan, [n for n in _plan_nodes(plan) if n.get("Relation Name") == "deals"]


@pytest.fixture(scope="module")
def big_warehouse_url(scratch_databases) -> str:  # type: ignore[no-untyped-def]
    """The owner's URL of the warehouse: generated raw rows, then the marts built by dbt."""
    url = scratch_databases("explain")
    conn = connect(url, autocommit=False)
    raw_data.create_raw_tables(conn)
    with conn.cursor() as cur:
        cur.execute(GENERATE)
    conn.commit()
    for tenant in range(TENANTS):
        raw_data.add_pipelines(conn, f"job-{tenant:02d}-000", f"tenant-{tenant:02d}",
                               datetime(2024, 1, 1, tzinfo=UTC))
    conn.close()
    # The two marts the queries read, with their post-hooks (indexes, RLS, grants); the other
    # marts and the data tests are exercised by the scenario tests.
    dbt_run_in_process(url, "--select", "+deals", "+scan_jobs")
    owner = connect(url)
    with owner.cursor() as cur:
        cur.execute("analyze analytics.deals")
        cur.execute("analyze analytics.scan_jobs")
        cur.execute("select count(*), count(distinct _tenant_id) from analytics.deals")
        assert cur.fetchone() == (DEALS, TENANTS)
    owner.close()
    return url


@pytest.fixture(scope="module")
def big_warehouse(big_warehouse_url: str, analyst_login: str
                  ) -> Iterator[psycopg2.extensions.connection]:
    """The analyst's connection to it, with the tenant set."""
    analyst = connect(with_user(big_warehouse_url, analyst_login))
    with analyst.cursor() as cur:
        cur.execute(f"set app.current_tenant_id = '{TENANT}'")
    yield analyst
    analyst.close()


@pytest.mark.parametrize("name", list(QUERIES))
def test_seed_query_uses_an_index(big_warehouse: psycopg2.extensions.connection,
                                  name: str) -> None:
    relation, sql = QUERIES[name]
    with big_warehouse.cursor() as cur:
        cur.execute(sql)
        assert cur.fetchall(), name  # the analyst sees rows of its tenant
        cur.execute(f"explain (format json) {sql}")
        plan = cur.fetchone()[0][0]["Plan"]
    on_relation = [n for n in _plan_nodes(plan) if n.get("Relation Name") == relation]
    assert on_relation, (name, plan)
    assert all("Index" in n["Node Type"] for n in on_relation), (
        name, [(n["Node Type"], n.get("Index Name")) for n in on_relation])


#: Seed queries (of QUERIES) answered by one of our covering indexes, once the table is vacuumed
#: as the loader's transform does after each build: an index-only scan with no heap fetch. (The
#: name search can be too: idx_deals_tenant_date_listing holds its columns; here the planner
#: expects almost no match for the ilike and prefers the narrower (_tenant_id) index.)
COVERED: dict[str, str] = {
    "deals by stage": "idx_deals_tenant_pipeline_stage_amount",
    "pipeline and stage": "idx_deals_tenant_pipeline_stage_amount",
    "closed deals by month": "idx_deals_tenant_close_date_amount",
    "deals by date range": "idx_deals_tenant_date_listing",
}


@pytest.fixture(scope="module")
def vacuumed_warehouse(big_warehouse_url: str, big_warehouse: psycopg2.extensions.connection
                       ) -> psycopg2.extensions.connection:
    """The same warehouse after the loader's post-build vacuum (loader.transform.vacuum_marts).
    Module-scoped and requested only by the tests below, which run after the plan tests above."""
    assert transform.vacuum_marts(big_warehouse_url) == list(transform.VACUUMED_MARTS)
    return big_warehouse


@pytest.mark.parametrize("name", list(COVERED))
def test_seed_query_reads_its_covering_index_only(
        vacuumed_warehouse: psycopg2.extensions.connection, name: str) -> None:
    _relation, sql = QUERIES[name]
    _plan, on_deals = _explained(vacuumed_warehouse, sql, analyze=True)
    assert [(n["Node Type"], n.get("Index Name")) for n in on_deals] == [
        ("Index Only Scan", COVERED[name])], name
    assert on_deals[0]["Actual Rows"] > 0, name
    assert on_deals[0]["Heap Fetches"] == 0, name


def test_a_page_of_a_scans_deals_is_read_in_order_without_sorting_the_scan(
        big_warehouse: psycopg2.extensions.connection) -> None:
    """The seed's paginated listing of a scan's deals (newest first, 100 at a time) walks
    idx_deals_scan_job_created backwards and stops after the page: no sort of every deal of the
    scan, whose cost grew with the scan (a full scan's job holds every deal of its tenant: 9 ms
    p95 at 10,000 deals a tenant, make bench at 1,000,000 deals over 100 tenants)."""
    _relation, sql = QUERIES["paginated deals of a scan"]
    sql = sql.replace(JOB, FULL_JOB)  # 9,000 deals of the tenant
    with big_warehouse.cursor() as cur:
        cur.execute(f"select count(*) from analytics.deals where scan_job_id = '{FULL_JOB}'")
        assert cur.fetchone()[0] == DEALS // TENANTS * 9 // 10
    plan, on_deals = _explained(big_warehouse, sql, analyze=True)
    assert not [n for n in _plan_nodes(plan)
                if n["Node Type"] in ("Sort", "Incremental Sort")], plan
    assert [(n["Node Type"], n.get("Index Name"), n.get("Scan Direction"))
            for n in on_deals] == [("Index Scan", "idx_deals_scan_job_created", "Backward")]
    assert 0 < on_deals[0]["Actual Rows"] <= 100


def test_the_not_null_test_of_archived_reads_an_empty_index(big_warehouse_url: str) -> None:
    """dbt's not_null test of analytics.deals.archived (run after every build) reads
    idx_deals_archived_null, which holds no entry while every deal has archived set, instead
    of the table's 200,000 rows."""
    with closing(connect(big_warehouse_url)) as owner:
        plan, on_deals = _explained(
            owner, "select archived from analytics.deals where archived is null", analyze=True)
    assert [(n["Node Type"], n.get("Index Name")) for n in on_deals] == [
        ("Index Only Scan", "idx_deals_archived_null")], plan
    assert on_deals[0]["Actual Rows"] == 0, plan


def test_a_tenants_high_water_mark_is_one_index_probe(big_warehouse_url: str) -> None:
    """What extracted_after_high_water_marks asks of analytics.deals for each tenant before an
    incremental build: the latest extraction, read from idx_deals_tenant_extracted_at, not
    an aggregate over the table's 200,000 rows."""
    with closing(connect(big_warehouse_url)) as owner:
        plan, on_deals = _explained(owner, "select max(_extracted_at) from analytics.deals "
                                           f"where _tenant_id = '{TENANT}'")
    assert [(n["Node Type"], n.get("Index Name")) for n in on_deals] == [
        ("Index Only Scan", "idx_deals_tenant_extracted_at")], plan


def test_an_indexed_custom_property_is_read_through_its_index(
        big_warehouse_url: str, vacuumed_warehouse: psycopg2.extensions.connection) -> None:
    """The seed's custom-property query for a property most deals have (custom_region: 6 in 7,
    as the sandbox's 85%), once the property is listed in indexed_properties: the next build
    adds idx_deals_prop_custom_region, and the analyst's query reads the tenant's deals that
    have it through that index, with no filter left to evaluate on each row. Runs last in this
    module: it adds an index to the shared warehouse."""
    sql = f"""
        select id, dealname, properties ->> 'custom_region' as custom_value
        from analytics.deals
        where _tenant_id = '{TENANT}' and properties ->> 'custom_region' is not null"""
    dbt_run_in_process(big_warehouse_url, "--select", "deals",
                       "--vars", "{indexed_properties: [custom_region]}")
    assert transform.vacuum_marts(big_warehouse_url) == list(transform.VACUUMED_MARTS)
    plan, on_deals = _explained(vacuumed_warehouse, sql, analyze=True)
    assert [(n["Node Type"], n.get("Index Name")) for n in on_deals] == [
        ("Index Scan", "idx_deals_prop_custom_region")], plan
    assert "Filter" not in on_deals[0], on_deals[0]
    # tenant-07 holds the deals g with g % 20 = 7; those with g % 7 = 0 lack the property.
    assert on_deals[0]["Actual Rows"] == sum(1 for g in range(7, DEALS, TENANTS) if g % 7)

