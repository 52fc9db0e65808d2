"""Indexes for the custom properties analysts filter on (var ``indexed_properties``, by default
``LOADER_INDEXED_PROPERTIES``; ``macros/property_indexes.sql``): created with the build, used by
the seed's custom-property query as an analyst sees it, dropped when the property leaves the
list; a name that is not a HubSpot property name fails the build with a message naming it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from loader import transform
from tests.conftest import query
from tests.dbt import raw_data
from tests.dbt.conftest import _dbt_node_results, connect, with_user

T0 = datetime(2025, 5, 1, 9, tzinfo=UTC)
TENANT = "acme"
#: The seed's custom-property query for one tenant, with its property name.
SEED_QUERY = """
    select id, dealname, properties->>'custom_region' as custom_value
    from analytics.deals
    where _tenant_id = 'acme' and properties->>'custom_region' is not null"""


def _property_indexes(conn) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return dict(query(conn, """
        select indexname, indexdef from pg_indexes
        where schemaname = 'analytics' and tablename = 'deals'
            and indexname like 'idx\\_deals\\_prop\\_%'"""))


def _build(url: str, properties: str) -> dict[str, str]:
    """``dbt run`` of deals and what it needs, with ``properties`` as the var; dbt's status of
    each model."""
    results = _dbt_node_results(url, "run", "--select", "+deals",
                                "--vars", f"{{indexed_properties: '{properties}'}}")
    return {r.node.name: f"{r.status}: {r.message}" for r in results
            if r.node.resource_type == "model" and str(r.status) != "success"}


def test_listed_properties_are_indexed_used_by_the_seed_query_and_dropped_when_unlisted(
    scratch_databases, analyst_login: str,  # type: ignore[no-untyped-def]
) -> None:
    url = scratch_databases("propidx")
    conn = connect(url, autocommit=False)
    raw_data.create_raw_tables(conn)
    for tenant in (TENANT, "globex"):
        raw_data.add_scan_job(conn, f"job-{tenant}", tenant)
        raw_data.add_pipelines(conn, f"job-{tenant}", tenant, T0)
        for n in range(40):
            region = {"custom_region": "EMEA"} if n % 4 else {}
            raw_data.add_deal(conn, f"job-{tenant}", tenant, str(n), T0, T0, **region)
    conn.close()

    assert _build(url, "custom_region, hs_priority ,custom_region") == {}
    admin = connect(url)
    assert query(admin, "select count(*) from analytics.deals") == [(80,)]
    indexes = _property_indexes(admin)
    assert sorted(indexes) == ["idx_deals_prop_custom_region", "idx_deals_prop_hs_priority"]
    assert indexes["idx_deals_prop_custom_region"].endswith(
        "USING btree (_tenant_id) "
        "WHERE ((properties ->> 'custom_region'::text) IS NOT NULL)")

    # As an analyst (row-level security on), with the planner steered off the small table's
    # sequential scan: the index answers the filter, which is not evaluated again.
    analyst = connect(with_user(url, analyst_login))
    with analyst.cursor() as cur:
        cur.execute("select set_config('app.current_tenant_id', %s, false)", (TENANT,))
        cur.execute("set enable_seqscan = off")
        cur.execute("explain (costs off) " + SEED_QUERY)
        plan = "\n".join(row[0] for row in cur.fetchall())
        cur.execute(SEED_QUERY)
        rows = cur.fetchall()
    analyst.close()
    assert "idx_deals_prop_custom_region" in plan, plan
    assert "custom_region'::text) IS NOT NULL" not in plan.split("Index Cond")[-1], plan
    assert len(rows) == 30
    assert {value for _, _, value in rows} == {"EMEA"}

    assert _build(url, "hs_priority") == {}
    assert sorted(_property_indexes(admin)) == ["idx_deals_prop_hs_priority"]
    assert _build(url, "") == {}
    assert _property_indexes(admin) == {}
    # The seed's GIN index, whose name starts alike, is not ours to drop.
    assert query(admin, "select to_regclass('analytics.idx_deals_properties_gin') is not null") \
        == [(True,)]
    admin.close()


@pytest.mark.parametrize("bad", ["Custom-Region", "region'; drop table x; --", "1st_region"])
def test_a_name_that_is_not_a_property_name_fails_the_build_naming_it(
    scratch_databases, bad: str, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    url = scratch_databases("propbad")
    conn = connect(url, autocommit=False)
    raw_data.create_raw_tables(conn)
    raw_data.add_scan_job(conn, "job-1", TENANT)
    raw_data.add_pipelines(conn, "job-1", TENANT, T0)
    raw_data.add_deal(conn, "job-1", TENANT, "1", T0, T0)
    conn.close()

    # What `LOADER_INDEXED_PROPERTIES=... python -m loader transform` runs.
    monkeypatch.setenv("LOADER_INDEXED_PROPERTIES", f"custom_region,{bad}")
    result = transform.Builder(url).build(quiet=True)
    assert not result.ok
    assert f'indexed_properties: "{bad}" is not a HubSpot property name' in (
        result.error or ""), result.error
    with connect(url).cursor() as cur:
        cur.execute("select to_regclass('analytics.deals'), to_regclass('analytics.scan_jobs')")
        assert cur.fetchone() == (None, None)  # stopped before any model


def test_the_commands_that_build_refuse_a_bad_name_before_any_work(
    scratch_databases, run_loader,  # type: ignore[no-untyped-def]
) -> None:
    """``run``, ``worker`` and ``transform`` read LOADER_INDEXED_PROPERTIES at their start: a
    bad name is a one-line error (exit 2) before a scan or dbt, not a failed build after the
    scans."""
    url = scratch_databases("propcli")
    for command in (["run", "--tenant", "acme"], ["worker", "--once"], ["transform"]):
        proc = run_loader(*command, env={"DATABASE_URL": url,
                                         "LOADER_INDEXED_PROPERTIES": "custom_region, Region"})
        assert proc.returncode == 2, (command, proc.stderr)
        assert proc.stderr.strip() == ("error: LOADER_INDEXED_PROPERTIES: 'Region' is not a "
                                       "HubSpot property name (lowercase letters, digits and _, "
                                       "starting with a letter)"), command
    with connect(url).cursor() as cur:
        cur.execute("select count(*) from information_schema.schemata "
                    "where schema_name in ('loader', 'raw_hubspot', 'analytics')")
        assert cur.fetchone() == (0,)  # nothing started
    # --no-transform builds nothing, so the variable is not its business.
    proc = run_loader("run", "--tenant", "acme", "--no-transform",
                      env={"DATABASE_URL": url, "LOADER_INDEXED_PROPERTIES": "Region",
                           "HUBSPOT_API_BASE_URL": "http://127.0.0.1:9"})
    assert "LOADER_INDEXED_PROPERTIES" not in proc.stderr


def test_the_loaders_check_of_names_agrees_with_the_macros(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same names pass and fail in loader.settings as in macros/property_indexes.sql (the
    bad ones of the build test above, and good ones with spaces and repeats)."""
    from loader import settings

    monkeypatch.setenv("LOADER_INDEXED_PROPERTIES", " custom_region,hs_priority ,custom_region,")
    assert settings.indexed_properties() == ["custom_region", "hs_priority"]
    for bad in ("Custom-Region", "region'; drop table x; --", "1st_region"):
        monkeypatch.setenv("LOADER_INDEXED_PROPERTIES", f"custom_region,{bad}")
        with pytest.raises(Exception, match="is not a HubSpot property name"):
            settings.indexed_properties()
