"""The source's own csv job files (``_Spool`` in loader/hubspot): what they carry lands exactly,
every row belongs to a completed load, and no file outlives its scan.

The deals and their stage history are written to csv by the source and imported into dlt's load
package whole, so no row passes through dlt's writers: these tests check the outcome in the raw
tables against what the sandbox serves."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from loader.sandbox import SandboxServer
from tests.conftest import query, unique_tenant, write_tenants_file

#: Values a csv file has to quote or escape, and text PostgreSQL must get byte for byte.
AWKWARD = {
    "dealname": 'say "hi", then leave',
    "description": 'line one\nline two\r\nthree,\t"four"\\five \\N NULL',
    "hs_next_step": ",",
}
AWKWARD_TOO = {
    "dealname": "Zürich — 日本 😀 ''",
    "description": "\\.\n\\.",
    "hs_next_step": '"',
}


def _scan(run_loader, env: dict[str, str], tenant: str, *extra: str) -> dict:
    result = run_loader("run", "--tenant", tenant, "--json", "--no-transform", *extra, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout[: result.stdout.rindex("]") + 1])[0]


def _spooled_files(loader_home: Path, tenant: str) -> list[str]:
    spool = loader_home / "dlt" / f"hubspot_{tenant}" / "spool"
    return [os.path.join(d, f) for d, _, files in os.walk(spool) for f in files]


def _latest_raw(db_conn, tenant: str, ids: list[str]) -> dict[str, tuple]:
    rows = query(db_conn, "select distinct on (id) id, properties, created_at, updated_at "
                          "from raw_hubspot.deals where _tenant_id = %s and id = any(%s) "
                          "order by id, updated_at desc, _extracted_at desc", (tenant, ids))
    return {r[0]: r[1:] for r in rows}


def _ms(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_awkward_values_land_exactly_and_no_spooled_file_outlives_its_scan(
    run_loader, db_conn, loader_home: Path, tmp_path: Path
) -> None:
    tenant = unique_tenant("spool")
    token = "tok-spool-0123456789"
    env = write_tenants_file(tmp_path / "t.toml", {tenant: token})
    # What a scan killed while its source was writing would leave behind.
    leftover = loader_home / "dlt" / f"hubspot_{tenant}" / "spool" / "killed"
    leftover.mkdir(parents=True)
    (leftover / "deals.csv").write_text("id\n1\n")
    with SandboxServer(portals={tenant: token}, deals=300, seed=9) as sb:
        env["HUBSPOT_API_BASE_URL"] = sb.base_url
        portal = sb.portal(tenant)
        ids = portal.deal_ids()
        awkward = ids[:4]
        for deal_id in awkward:
            portal.update_deal(deal_id, AWKWARD)
        full = _scan(run_loader, env, tenant)
        assert full["status"] == "completed" and full["mode"] == "full"
        assert _spooled_files(loader_home, tenant) == []

        def served(deal_ids: list[str]) -> dict[str, tuple]:
            deals = {i: portal.deal(i) for i in deal_ids}
            return {i: (d["properties"], d["createdAt"], d["updatedAt"]) for i, d in deals.items()}

        def landed(deal_ids: list[str]) -> dict[str, tuple]:
            return {i: (p, _ms(c), _ms(u))
                    for i, (p, c, u) in _latest_raw(db_conn, tenant, deal_ids).items()}

        assert landed(awkward + ids[-3:]) == served(awkward + ids[-3:])
        count = query(db_conn, "select count(distinct id) from raw_hubspot.deals "
                               "where _tenant_id = %s", (tenant,))
        assert count == [(len(ids) + len(portal.deal_ids(archived=True)),)]

        again = ids[2:6]
        for deal_id in again:
            portal.update_deal(deal_id, AWKWARD_TOO)
        # A stage move in the default pipeline (the portal's data depends on the tenant id).
        moved = next(i for i in ids[6:] if portal.deal(i)["properties"]["pipeline"] == "default"
                     and portal.deal(i)["properties"]["dealstage"] != "contractsent")
        portal.update_deal(moved, {"dealstage": "contractsent"})
        inc = _scan(run_loader, env, tenant, "--lookback-seconds", "0")
        assert inc["status"] == "completed" and inc["mode"] == "incremental"
        assert landed(awkward + again + [moved]) == served(awkward + again + [moved])
        assert _spooled_files(loader_home, tenant) == []

        # A scan that fails after some pages were spooled lands nothing and leaves no file.
        portal.add_fault("bad_json", path="/crm/v3/objects/deals", method="GET", every=4)
        failed = run_loader("run", "--tenant", tenant, "--json", "--no-transform",
                            "--full-refresh", "--batch-size", "20", env=env)
        assert failed.returncode != 0
    (job,) = query(db_conn, "select status, scan_id, processed_items from loader.scan_jobs "
                            "where organization_id = %s order by created_at desc limit 1",
                   (tenant,))
    assert job[0] == "failed" and job[2] > 0  # batches were taken before the bad page
    assert query(db_conn, "select count(*) from raw_hubspot.deals where _scan_id = %s",
                 (job[1],)) == [(0,)]
    assert _spooled_files(loader_home, tenant) == []

    # Every row the spool wrote belongs to a load dlt completed; a history row to its deal's.
    assert query(db_conn, """
        select count(*) from raw_hubspot.deals as d
        left join raw_hubspot._dlt_loads as l on l.load_id = d._dlt_load_id and l.status = 0
        where d._tenant_id = %s and l.load_id is null""", (tenant,)) == [(0,)]
    assert query(db_conn, """
        select count(*), count(*) filter (where h._dlt_load_id <> d._dlt_load_id)
        from raw_hubspot.deals_stage_history as h
        join raw_hubspot.deals as d on d._dlt_id = h._dlt_parent_id
        where d._tenant_id = %s""", (tenant,))[0][1] == 0
    history = query(db_conn, """
        select count(*) from raw_hubspot.deals_stage_history as h
        join raw_hubspot.deals as d on d._dlt_id = h._dlt_parent_id
        where d._tenant_id = %s and d._scan_id = %s and d.id = %s""",
        (tenant, inc["scan_id"], moved))
    assert history[0][0] >= 2  # the moved deal's history was read again and landed with it
    # Neither table has a unique key (dlt's on a child table's _dlt_id): a COPY into them checks
    # none; a job a killed load had committed is told apart by scan._settle_committed_jobs.
    assert query(db_conn, "select count(*) from pg_index where indisunique and indrelid in "
                          "('raw_hubspot.deals'::regclass, "
                          "'raw_hubspot.deals_stage_history'::regclass)") == [(0,)]


def _served_pages(base_url: str, token: str, **params: str) -> list[dict]:
    """Every deal the list endpoint serves (each page of 50 with the stage's history)."""
    import requests

    deals, after = [], None
    while True:
        query_params = {"limit": "50", "properties": "dealname", **params}
        if after:
            query_params["after"] = after
        page = requests.get(f"{base_url}/crm/v3/objects/deals", params=query_params,
                            headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        deals += page["results"]
        after = (page.get("paging") or {}).get("next", {}).get("after")
        if not after:
            return deals


def test_a_scan_of_many_spool_writes_lands_every_row_once_with_its_times(
    run_loader, db_conn, tmp_path: Path
) -> None:
    """The spool gathers a table's batches and writes them 1,000 rows at a time (SPOOL_ROWS),
    the last ones when it drains: 2,600 deals and their history in batches of 50 make several
    writes of each table, each with its timestamps as text. Every deal and history entry the
    sandbox serves lands once, with the same instants and in the same order."""
    from loader.hubspot import SPOOL_ROWS

    tenant = unique_tenant("spoolrows")
    token = "tok-spoolrows-0123456789"
    env = write_tenants_file(tmp_path / "t.toml", {tenant: token})
    with SandboxServer(portals={tenant: token}, deals=2600, seed=31) as sb:
        env["HUBSPOT_API_BASE_URL"] = sb.base_url
        live = _served_pages(sb.base_url, token, propertiesWithHistory="dealstage")
        archived = _served_pages(sb.base_url, token, archived="true")
        scan = _scan(run_loader, env, tenant, "--batch-size", "50")
    assert scan["status"] == "completed" and scan["processed_items"] == len(live) + len(archived)
    assert len(live) > 2 * SPOOL_ROWS and archived

    rows = query(db_conn, "select id, _dlt_id, created_at, updated_at, archived_at "
                          "from raw_hubspot.deals where _scan_id = %s", (scan["scan_id"],))
    assert sorted(r[0] for r in rows) == sorted(d["id"] for d in live + archived)  # each once
    by_id = {r[0]: r for r in rows}
    for deal in live + archived:
        _, _, created, updated, archived_at = by_id[deal["id"]]
        assert (_ms(created), _ms(updated)) == (deal["createdAt"], deal["updatedAt"])
        assert (archived_at and _ms(archived_at)) == deal.get("archivedAt")

    history = query(db_conn, """
        select h._dlt_parent_id, h.value, h.changed_at, h.source_type
        from raw_hubspot.deals_stage_history as h
        join raw_hubspot.deals as d on d._dlt_id = h._dlt_parent_id
        where d._scan_id = %s order by h._dlt_parent_id, h._dlt_list_idx""", (scan["scan_id"],))
    landed: dict[str, list[tuple]] = {}
    for parent, value, changed_at, source in history:
        landed.setdefault(parent, []).append((value, _ms(changed_at), source))
    served = {by_id[d["id"]][1]: [(e["value"], e["timestamp"], e["sourceType"])
                                  for e in d["propertiesWithHistory"]["dealstage"]]
              for d in live if d["propertiesWithHistory"]["dealstage"]}
    assert len(history) > 2 * SPOOL_ROWS
    assert landed == served
