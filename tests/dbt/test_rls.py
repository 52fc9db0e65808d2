"""Row-level security as analysts meet it: a LOGIN member of hubspot_analyst (not the owner, not
superuser, no BYPASSRLS) sees exactly its tenant's rows in every table and view of analytics,
nothing without a tenant, and nothing outside analytics."""

from __future__ import annotations

import psycopg2
import psycopg2.errors
import pytest

from tests.dbt.conftest import Warehouse, connect, fetch, relation_tenant_columns, with_user

TENANTS = ("acme", "globex")


@pytest.fixture()
def analyst(warehouse: Warehouse, analyst_login: str):  # type: ignore[no-untyped-def]
    conn = connect(with_user(warehouse.url, analyst_login))
    yield conn
    conn.close()


def _rows(conn: psycopg2.extensions.connection, sql: str) -> list[tuple[object, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall() if cur.description else []


def test_the_analyst_login_is_no_owner_superuser_or_bypassrls(
    warehouse: Warehouse, analyst_login: str
) -> None:
    (superuser, bypass), = fetch(
        warehouse.url, "select rolsuper, rolbypassrls from pg_roles where rolname = %s",
        (analyst_login,))
    assert not superuser and not bypass
    owned = fetch(warehouse.url, "select count(*) from pg_class where relowner = "
                  "(select oid from pg_roles where rolname = %s)", (analyst_login,))
    assert owned == [(0,)]


def test_each_tenant_sees_exactly_its_rows_in_every_relation(
    warehouse: Warehouse, analyst: psycopg2.extensions.connection
) -> None:
    relations = relation_tenant_columns(connect(warehouse.url))
    assert {"deals", "scan_jobs", "deal_pipelines", "deal_stages", "deal_stage_history",
            "deals_quarantine", "deals_by_stage", "pipeline_stage_summary",
            "closed_deals_by_month", "scan_progress"} <= set(relations)
    for tenant in TENANTS:
        _rows(analyst, f"set app.current_tenant_id = '{tenant}'")
        for relation, column in relations.items():
            seen = _rows(analyst, f"select {column} from analytics.{relation}")
            expected = fetch(warehouse.url,
                             f"select {column} from analytics.{relation} where {column} = %s",
                             (tenant,))
            assert sorted(seen) == sorted(expected), (tenant, relation)
            if tenant == "acme":
                assert seen, relation  # the scenario gives acme rows everywhere


def test_no_tenant_set_or_an_empty_one_sees_nothing(
    warehouse: Warehouse, analyst: psycopg2.extensions.connection
) -> None:
    relations = relation_tenant_columns(connect(warehouse.url))

    def counts() -> dict[str, int]:
        return {r: _rows(analyst, f"select count(*) from analytics.{r}")[0][0]  # type: ignore[misc]
                for r in relations}

    assert set(counts().values()) == {0}  # never set in this session
    analyst.autocommit = False
    _rows(analyst, "set local app.current_tenant_id = 'acme'")
    assert _rows(analyst, "select count(*) from analytics.deals")[0][0] > 0
    analyst.commit()
    analyst.autocommit = True
    assert _rows(analyst, "select current_setting('app.current_tenant_id', true)") == [("",)]
    assert set(counts().values()) == {0}  # empty after the SET LOCAL's transaction
    _rows(analyst, "set app.current_tenant_id = ''")
    assert set(counts().values()) == {0}


def test_the_same_deal_id_in_two_tenants_stays_separate(
    analyst: psycopg2.extensions.connection,
) -> None:
    names = {}
    for tenant in TENANTS:
        _rows(analyst, f"set app.current_tenant_id = '{tenant}'")
        names[tenant] = _rows(analyst, "select _tenant_id, dealname from analytics.deals "
                                       "where id = '1'")
    assert names == {"acme": [("acme", "acme one")], "globex": [("globex", "globex one")]}


@pytest.mark.parametrize("relation", ["raw_hubspot.deals", "loader.scan_jobs",
                                      "staging.stg_hubspot__deals"])
def test_nothing_outside_analytics_is_readable(
    analyst: psycopg2.extensions.connection, relation: str
) -> None:
    _rows(analyst, "set app.current_tenant_id = 'acme'")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        _rows(analyst, f"select count(*) from {relation}")


def test_analysts_cannot_write(analyst: psycopg2.extensions.connection) -> None:
    _rows(analyst, "set app.current_tenant_id = 'acme'")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        _rows(analyst, "delete from analytics.deals returning id")
