"""End to end: sandbox HubSpot → loader (dlt) → raw_hubspot → dbt → analytics.deals."""

from __future__ import annotations

from pathlib import Path

from loader.sandbox import SandboxServer
from tests.conftest import query, unique_tenant, write_tenants_file
from tests.hubspot_expect import (
    expected_amount,
    expected_text,
    expected_timestamp,
    fetch_all_deals,
)

DEAL_COLUMNS = (
    "id, _tenant_id, _scan_id, scan_job_id, dealname, amount, dealstage, pipeline, createdate, "
    "closedate, dealtype, hs_priority, archived, hubspot_updated_at"
)


def test_two_tenants_sharing_deal_ids_land_typed_and_separate(
    run_loader, db_conn, tmp_path: Path
) -> None:
    tenant_a, tenant_b = unique_tenant("acme"), unique_tenant("globex")
    tokens = {tenant_a: "token-a-" + "x" * 20, tenant_b: "token-b-" + "y" * 20}
    env = write_tenants_file(tmp_path / "tenants.toml", tokens)
    with SandboxServer(portals=tokens, deals=300, seed=11) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        served = {
            t: fetch_all_deals(sandbox.base_url, tok) + fetch_all_deals(
                sandbox.base_url, tok, archived=True)
            for t, tok in tokens.items()
        }
        for tenant in tokens:
            result = run_loader("run", "--tenant", tenant, env=env)
            assert result.returncode == 0, result.stderr
            assert "completed" in result.stdout

    # The two portals really share deal ids, with different contents.
    ids_a = {d["id"] for d in served[tenant_a]}
    ids_b = {d["id"] for d in served[tenant_b]}
    shared = ids_a & ids_b
    assert len(shared) >= 100
    # ...and serve the edge cases this test is about.
    everything = [d for deals in served.values() for d in deals]
    amounts = [d["properties"].get("amount") for d in everything]
    assert "" in amounts and None in amounts
    closedates = [d["properties"].get("closedate") or "" for d in everything]
    assert any(len(c) == 10 for c in closedates) and any(len(c) > 10 for c in closedates)
    assert any(d.get("archived") for d in everything)

    for tenant in tokens:
        rows = query(db_conn, f"select {DEAL_COLUMNS} from analytics.deals where _tenant_id = %s",
                     (tenant,))
        assert len(rows) == len(served[tenant]), tenant
        (scan_id, job_id), = query(
            db_conn,
            "select scan_id, id from analytics.scan_jobs where organization_id = %s",
            (tenant,),
        )
        by_id = {r[0]: r for r in rows}
        for deal in served[tenant]:
            row = by_id[deal["id"]]
            props = deal["properties"]
            assert row[1] == tenant
            assert row[2] == scan_id and row[3] == job_id
            assert row[4] == expected_text(props.get("dealname"))
            assert row[5] == expected_amount(props.get("amount")), (deal["id"], props["amount"])
            assert row[6] == expected_text(props.get("dealstage"))
            assert row[7] == expected_text(props.get("pipeline"))
            assert row[8] == expected_timestamp(props.get("createdate"))
            assert row[9] == expected_timestamp(props.get("closedate")), props.get("closedate")
            assert row[10] == expected_text(props.get("dealtype"))
            assert row[11] == expected_text(props.get("hs_priority"))
            assert row[12] is bool(deal.get("archived"))
            assert row[13] == expected_timestamp(deal["updatedAt"])

    # A shared id is two rows, one per tenant, each with its own content.
    deal_id = sorted(shared)[0]
    names = dict(query(db_conn, "select _tenant_id, dealname from analytics.deals where id = %s "
                       "and _tenant_id in (%s, %s)", (deal_id, tenant_a, tenant_b)))
    assert set(names) == {tenant_a, tenant_b}

    # The typed columns have the seed's types.
    types = dict(query(db_conn, """
        select column_name, data_type || coalesce('(' || character_maximum_length || ')', '')
            || coalesce('(' || numeric_precision || ',' || numeric_scale || ')', '')
        from information_schema.columns
        where table_schema = 'analytics' and table_name = 'deals'"""))
    assert types["amount"] == "numeric(15,2)"
    assert types["dealname"] == "character varying(500)"
    assert types["createdate"] == "timestamp without time zone"
    assert types["properties"] == "jsonb"


def test_second_run_is_incremental_and_bad_token_fails(run_loader, tmp_path: Path) -> None:
    tenant = unique_tenant("inc")
    tokens = {tenant: "token-inc-" + "z" * 20}
    env = write_tenants_file(tmp_path / "tenants.toml", tokens)
    with SandboxServer(portals=tokens, deals=120, seed=3) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        first = run_loader("run", "--tenant", tenant, "--json", "--no-transform", env=env)
        assert first.returncode == 0, first.stderr
        assert '"mode": "full"' in first.stdout
        second = run_loader("run", "--tenant", tenant, "--json", "--no-transform", env=env)
        assert second.returncode == 0, second.stderr
        assert '"mode": "incremental"' in second.stdout
        bad = run_loader("run", "--tenant", tenant, "--no-transform",
                         env={**env, next(k for k in env if k.startswith("HUBSPOT_TOKEN")): "nope"})
    assert bad.returncode != 0
    last = bad.stderr.strip().splitlines()[-1]
    assert tenant in last and "401" in last
    assert "nope" not in bad.stderr + bad.stdout
