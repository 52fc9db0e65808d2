"""Extraction against the sandbox: incremental scans, the search cap, archives, wide portals,
throttling and faults. Each test asserts the final ``analytics.deals`` of its tenants."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from loader.sandbox import SandboxServer
from tests.conftest import query, unique_tenant, write_tenants_file
from tests.dbt.conftest import build_in_process

CONTENT_COLUMNS = (
    "id, dealname, amount, dealstage, pipeline, createdate, closedate, dealtype, "
    "hubspot_owner_id, description, deal_currency_code, hs_next_step, hs_priority, archived, "
    "properties, hubspot_created_at, hubspot_updated_at"
)


def _scan(run_loader, env: dict[str, str], tenant: str, *extra: str) -> dict:
    """One scan without dbt (tests build the marts once, with :func:`_transform`)."""
    result = run_loader("run", "--tenant", tenant, "--json", "--no-transform", *extra, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout[: result.stdout.rindex("]") + 1])[0]


def _transform() -> None:
    """``python -m loader transform`` in this process: the Builder the command runs, kept with
    its parsed project from build to build (tests/dbt/conftest.py); the command itself, a new
    process, is tested end to end in test_foundation.py and the worker's tests."""
    build_in_process(os.environ["DATABASE_URL"])


@contextlib.contextmanager
def _one_portal(tmp_path: Path, prefix: str, **sandbox: Any
                ) -> Iterator[tuple[str, dict[str, str], SandboxServer]]:
    """A sandbox with one portal for a new tenant, and the loader's environment for it:
    (tenant id, env, sandbox)."""
    tenant = unique_tenant(prefix)
    token = f"tok-{prefix}-0123456789"
    env = write_tenants_file(tmp_path / "t.toml", {tenant: token})
    with SandboxServer(portals={tenant: token}, **sandbox) as sb:
        env["HUBSPOT_API_BASE_URL"] = sb.base_url
        yield tenant, env, sb


def _wait_for_the_sandbox_clock(portal: Any, last_changed: str) -> None:
    """Wait until the wall clock has passed the sandbox's stamp of its latest write.

    The sandbox stamps each write at least a millisecond after the one before, so a burst of
    500 writes in a few milliseconds is stamped up to half a second ahead of the clock, and a
    scan that starts within that half second rightly leaves the deals stamped after its start to
    the next scan (its search ends at its start). HubSpot's stamps never run ahead of time."""
    stamp = datetime.fromisoformat(portal.deal(last_changed)["updatedAt"]).timestamp()
    time.sleep(max(0.0, stamp - time.time() + 0.01))


def _deals(db_conn, tenant: str) -> list[tuple]:
    return query(db_conn, f"select {CONTENT_COLUMNS} from analytics.deals "
                          "where _tenant_id = %s order by id", (tenant,))


# Extraction logic, not the database flavour: once, on the embedded server.
@pytest.mark.embedded_only
def test_incremental_after_one_percent_change_is_about_one_percent_of_requests(
    run_loader, db_conn, tmp_path: Path
) -> None:
    with _one_portal(tmp_path, "big", deals=50_000, seed=21) as (tenant, env, sb):
        portal = sb.portal(tenant)
        full = _scan(run_loader, env, tenant)
        assert full["mode"] == "full"
        full_requests = portal.stats()["requests_total"]
        _transform()
        before = dict(query(db_conn, "select id, updated_at from analytics.deals "
                                     "where _tenant_id = %s", (tenant,)))
        changed = portal.deal_ids()[::100]  # 1% of the live deals
        for deal_id in changed:
            portal.update_deal(deal_id, {"hs_next_step": f"call back {deal_id}"})
        _wait_for_the_sandbox_clock(portal, changed[-1])
        portal.reset_stats()
        inc = _scan(run_loader, env, tenant)
        inc_requests = portal.stats()["requests_total"]
    _transform()
    assert inc["mode"] == "incremental"
    assert inc_requests <= 0.012 * full_requests, (inc_requests, full_requests)
    after = dict(query(db_conn, "select id, updated_at from analytics.deals "
                                "where _tenant_id = %s", (tenant,)))
    moved = {i for i in after if after[i] != before.get(i)}
    assert moved == set(changed)
    steps = dict(query(db_conn, "select id, hs_next_step from analytics.deals "
                                "where _tenant_id = %s and id = any(%s)", (tenant, changed)))
    assert all(steps[i] == f"call back {i}" for i in changed)


# Extraction logic, not the database flavour: once, on the embedded server.
@pytest.mark.embedded_only
def test_twelve_thousand_deals_sharing_one_timestamp_all_arrive_once(
    run_loader, db_conn, tmp_path: Path
) -> None:
    with _one_portal(tmp_path, "tie", deals=12_300, seed=4) as (tenant, env, sb):
        portal = sb.portal(tenant)
        _scan(run_loader, env, tenant, "--no-stage-history")
        stamp_ms = int(time.time() * 1000) - 60_000
        portal.set_all_lastmodified(stamp_ms)
        live = set(portal.deal_ids())
        assert len(live) > 12_000
        inc = _scan(run_loader, env, tenant)
        assert portal.stats()["count_429"] == 0
    _transform()
    assert inc["mode"] == "incremental"
    rows = query(db_conn, "select id, count(*) from raw_hubspot.deals where _scan_id = %s "
                          "and not archived group by id", (inc["scan_id"],))
    assert {r[0] for r in rows} == live
    assert all(count == 1 for _, count in rows)
    (stamped,) = query(db_conn, "select count(*) from analytics.deals where _tenant_id = %s and "
                                "not archived and hubspot_updated_at = "
                                "to_timestamp(%s / 1000.0) at time zone 'UTC'",
                       (tenant, stamp_ms))[0]
    assert stamped == len(live)


def test_archived_deals_land_as_archived(run_loader, db_conn, tmp_path: Path) -> None:
    with _one_portal(tmp_path, "arch", deals=2000, seed=8) as (tenant, env, sb):
        portal = sb.portal(tenant)
        archived_at_first = set(portal.deal_ids(archived=True))
        assert archived_at_first  # the generated portal has some (about 1%)
        full = _scan(run_loader, env, tenant)
        gone = portal.deal_ids()[10:13]
        for deal_id in gone:
            portal.archive_deal(deal_id)
        inc = _scan(run_loader, env, tenant)
        # Without a lookback, a scan right after lands no archived deal: all are stored.
        quiet = _scan(run_loader, env, tenant, "--lookback-seconds", "0")
        archived_in_portal = set(portal.deal_ids(archived=True))
        refresh = _scan(run_loader, env, tenant, "--full-refresh")
    _transform()
    assert [s["mode"] for s in (full, inc, quiet, refresh)] == [
        "full", "incremental", "incremental", "full"]

    def landed_archived(scan: dict) -> set[str]:
        return {r[0] for r in query(db_conn, "select id from raw_hubspot.deals "
                                             "where _scan_id = %s and archived",
                                    (scan["scan_id"],))}

    # Every scan lists the archived deals; an incremental one lands only those archived since
    # the last (less the lookback), a full one all of them.
    assert landed_archived(full) == archived_at_first
    assert landed_archived(inc) == set(gone)
    assert landed_archived(quiet) == set()
    assert landed_archived(refresh) == archived_in_portal == archived_at_first | set(gone)
    rows = dict(query(db_conn, "select id, archived from analytics.deals where _tenant_id = %s",
                      (tenant,)))
    assert all(rows[i] is True for i in gone)
    assert {i for i, archived in rows.items() if archived} == archived_in_portal


def test_an_incremental_scan_whose_archived_walk_fails_lands_nothing_and_the_next_lands_it_all(
    run_loader, db_conn, tmp_path: Path
) -> None:
    # An incremental scan walks the archived list beside its search (in a thread of its own):
    # its failure must still fail the scan whole, after the search's deals were read.
    with _one_portal(tmp_path, "archfail", deals=600, seed=9) as (tenant, env, sb):
        portal = sb.portal(tenant)
        _scan(run_loader, env, tenant)
        live = portal.deal_ids()
        changed, gone = live[20:25], live[40:42]
        for deal_id in changed:
            portal.update_deal(deal_id, {"hs_next_step": f"archfail {deal_id}"})
        for deal_id in gone:
            portal.archive_deal(deal_id)
        _wait_for_the_sandbox_clock(portal, changed[-1])
        # The list endpoint (GET) is read by the archived walk alone in an incremental scan: a
        # 200 that is not a HubSpot page (not retried). A fault's path is a prefix, so without
        # the method the search's POST to .../deals/search could take it first (a race).
        portal.bad_shape_next(1, "json", path="/crm/v3/objects/deals", method="GET")
        failed = run_loader("run", "--tenant", tenant, "--json", "--no-transform", env=env)
        portal.clear_faults()
        retry = _scan(run_loader, env, tenant)
    assert failed.returncode != 0
    (job,) = json.loads(failed.stdout[: failed.stdout.rindex("]") + 1])
    assert job["status"] == "failed" and job["mode"] == "incremental"
    assert "/crm/v3/objects/deals returned 200 without a 'results' list" in job["error_message"]
    assert query(db_conn, "select count(*) from raw_hubspot.deals where _scan_id = %s",
                 (job["scan_id"],))[0][0] == 0
    assert retry["status"] == "completed" and retry["mode"] == "incremental"
    landed = dict(query(db_conn, "select id, archived from raw_hubspot.deals "
                                 "where _scan_id = %s", (retry["scan_id"],)))
    assert set(changed) | set(gone) <= set(landed)
    assert all(landed[i] is True for i in gone) and not any(landed[i] for i in changed)


def test_pipelines_land_when_they_changed_and_on_full_scans_not_on_every_scan(
    run_loader, db_conn, tmp_path: Path
) -> None:
    with _one_portal(tmp_path, "pipes", deals=300, seed=12) as (tenant, env, sb):
        portal = sb.portal(tenant)
        full = _scan(run_loader, env, tenant)
        same = _scan(run_loader, env, tenant)
        portal.rename_stage("default", "contractsent", "Contract Out")
        renamed = _scan(run_loader, env, tenant)
        again = _scan(run_loader, env, tenant)
        refresh = _scan(run_loader, env, tenant, "--full-refresh")
        _transform()
    assert [s["mode"] for s in (full, same, renamed, again, refresh)] == [
        "full", "incremental", "incremental", "incremental", "full"]

    def landed(scan: dict) -> tuple[int, int]:
        return query(db_conn, "select count(distinct p._dlt_id), count(s._dlt_id) "
                              "from raw_hubspot.pipelines as p left join "
                              "raw_hubspot.pipelines__stages as s on s._dlt_parent_id = p._dlt_id "
                              "where p._scan_id = %s", (scan["scan_id"],))[0]

    # The sandbox's two pipelines have 12 stages in all.
    assert landed(full) == landed(renamed) == landed(refresh) == (2, 12)
    assert landed(same) == landed(again) == (0, 0)
    stages = dict(query(db_conn, "select stage_id, label from analytics.deal_stages "
                                 "where _tenant_id = %s and pipeline_id = 'default'", (tenant,)))
    assert stages["contractsent"] == "Contract Out"
    assert stages["closedwon"] == "Closed Won" and len(stages) == 7


def test_a_thousand_custom_properties_load_without_414(run_loader, db_conn, tmp_path) -> None:
    with _one_portal(tmp_path, "wide", deals=250, seed=2,
                     custom_properties=1000) as (tenant, env, sb):
        portal = sb.portal(tenant)
        _scan(run_loader, env, tenant)
        stats = sb.stats() if hasattr(sb, "stats") else {"count_414": portal.stats()["count_414"]}
        names = portal.custom_property_names
        sample = portal.deal(portal.deal_ids()[7])
    _transform()
    assert len(names) >= 1000
    assert stats["count_414"] == 0
    (props,) = query(db_conn, "select properties from analytics.deals "
                              "where _tenant_id = %s and id = %s", (tenant, sample["id"]))[0]
    assert set(names) <= set(props)
    assert {n: props[n] for n in names} == {n: sample["properties"].get(n) for n in names}


# Extraction logic, not the database flavour: once, on the embedded server.
@pytest.mark.embedded_only
def test_429_storm_and_5xx_end_in_the_same_tables_as_a_clean_run(
    run_loader, db_conn, tmp_path: Path
) -> None:
    clean, stormy = unique_tenant("clean"), unique_tenant("storm")
    # Two sandboxes serving the same portal ("p"): identical data, different tokens.
    with SandboxServer(portals={"p": "tok-clean-0123456789"}, deals=500, seed=33) as quiet, \
            SandboxServer(portals={"p": "tok-storm-0123456789"}, deals=500, seed=33) as noisy:
        env = write_tenants_file(tmp_path / "t.toml", {clean: "tok-clean-0123456789",
                                                      stormy: "tok-storm-0123456789"})
        _scan(run_loader, {**env, "HUBSPOT_API_BASE_URL": quiet.base_url}, clean)
        portal = noisy.portal("p")
        portal.set_rate_limit("free", time_scale=0.1)   # the real limiter on, 100 per second
        # A storm the loader did not cause: every third request answered 429 (Retry-After on
        # every other 429), plus 5xx with JSON and HTML bodies and cut-off bodies.
        portal.add_fault("status", status=429, every=3, count=12)
        portal.add_fault("status", status=503, every=10, count=2)
        portal.add_fault("status", status=502, every=14, count=2, body="html")
        portal.add_fault("truncate", count=2, path="/crm/v3/objects/deals")
        scan = _scan(run_loader, {**env, "HUBSPOT_API_BASE_URL": noisy.base_url}, stormy)
        stats = portal.stats()
    _transform()
    assert stats["status_counts"].get("429", 0) >= 5
    assert stats["status_counts"].get("503", 0) + stats["status_counts"].get("502", 0) >= 2
    assert scan["status"] == "completed"
    assert _deals(db_conn, stormy) == _deals(db_conn, clean)


def test_malformed_200_fails_the_scan_and_keeps_the_cursor(
    run_loader, db_conn, tmp_path: Path
) -> None:
    with _one_portal(tmp_path, "shape", deals=400, seed=5) as (tenant, env, sb):
        portal = sb.portal(tenant)
        _scan(run_loader, env, tenant)
        states_before = query(db_conn, "select count(*) from raw_hubspot._dlt_pipeline_state "
                                       "where pipeline_name = %s", (f"hubspot_{tenant}",))
        changed = portal.deal_ids()[:5]
        for deal_id in changed:
            portal.update_deal(deal_id, {"dealname": f"renamed {deal_id}"})
        portal.add_fault("bad_json", path="/crm/v3/objects/deals/search")
        bad = run_loader("run", "--tenant", tenant, "--no-transform", env=env)
        assert bad.returncode != 0
        last = bad.stderr.strip().splitlines()[-1]
        assert tenant in last and "unexpected response shape" in last
        (job,) = query(db_conn, "select status, error_message, scan_id from loader.scan_jobs "
                                "where organization_id = %s order by created_at desc limit 1",
                       (tenant,))
        assert job[0] == "failed" and "unexpected response shape" in job[1]
        assert query(db_conn, "select count(*) from raw_hubspot.deals where _scan_id = %s",
                     (job[2],)) == [(0,)]
        assert query(db_conn, "select count(*) from raw_hubspot._dlt_pipeline_state "
                              "where pipeline_name = %s", (f"hubspot_{tenant}",)) == states_before
        portal.clear_faults()
        again = _scan(run_loader, env, tenant)
    _transform()
    assert again["mode"] == "incremental"
    names = dict(query(db_conn, "select id, dealname from analytics.deals where _tenant_id = %s "
                                "and id = any(%s)", (tenant, changed)))
    assert names == {i: f"renamed {i}" for i in changed}


def test_a_deal_postgresql_cannot_store_is_kept_in_deals_rejected_and_counted(
    run_loader, db_conn, tmp_path: Path
) -> None:
    """A NUL character (``\\u0000`` in HubSpot's JSON) cannot go into ``jsonb`` or ``text``: the
    deal is rejected with the reason, kept whole (NUL as U+FFFD) and counted as failed, and the
    scan loads every other deal."""
    with _one_portal(tmp_path, "nul", deals=120, seed=5) as (tenant, env, sb):
        portal = sb.portal(tenant)
        ids = portal.deal_ids()
        portal.update_deal(ids[3], {"description": "before\x00after"})
        full = _scan(run_loader, env, tenant)
        portal.update_deal(ids[7], {"hs_next_step": "\x00"})
        inc = _scan(run_loader, env, tenant, "--lookback-seconds", "0")
        archived = len(portal.deal_ids(archived=True))
    assert full["status"] == inc["status"] == "completed"
    assert full["failed_items"] == 1 and full["processed_items"] == len(ids) - 1 + archived
    rejected = query(db_conn, "select _scan_id, deal_id, reason, payload from "
                              "raw_hubspot.deals_rejected where _tenant_id = %s", (tenant,))
    assert [r[1] for r in rejected if r[0] == full["scan_id"]] == [ids[3]]
    # The incremental scan rejects the newly broken deal; it may re-read the first one, whose
    # change is the cursor itself (the search's lower bound is inclusive).
    again = {r[1] for r in rejected if r[0] == inc["scan_id"]}
    assert inc["mode"] == "incremental" and ids[7] in again <= {ids[3], ids[7]}
    assert inc["failed_items"] == len(again)
    by_deal = {r[1]: r for r in rejected}
    assert all("NUL" in r[2] for r in rejected)
    assert by_deal[ids[3]][3]["properties"]["description"] == "before\ufffdafter"
    assert by_deal[ids[3]][3]["id"] == ids[3]
    landed = {r[0] for r in query(db_conn, "select id from raw_hubspot.deals where _scan_id = %s",
                                  (full["scan_id"],))}
    assert ids[3] not in landed and set(ids) - {ids[3]} <= landed


def test_a_change_during_a_full_scan_to_a_deal_already_read_reaches_the_next_scan(
    run_loader, db_conn, tmp_path: Path
) -> None:
    """A full scan reads each deal once, page by page, over minutes on a large portal. A deal
    changed after its page was read keeps a modification time older than deals changed later
    and read later; the next scan must still find it: a full scan's cursor stops at the scan's
    start (here with no lookback to hide behind)."""
    with _one_portal(tmp_path, "mid", deals=300, seed=8) as (tenant, env, sb):
        portal = sb.portal(tenant)
        ids = sorted(portal.deal_ids(), key=int)  # the list endpoint's order
        first, last = ids[0], ids[-1]  # on the first page (50 with history) and the last
        # Six list pages of 0.4 s each: the changes below land between the first and the last.
        portal.add_fault("delay", delay=0.4, path="/crm/v3/objects/deals", method="GET")
        outcome: dict[str, Any] = {}
        scan = threading.Thread(target=lambda: outcome.update(
            full=_scan(run_loader, env, tenant, "--lookback-seconds", "0")))
        scan.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _first_batch_taken(db_conn, tenant):
            time.sleep(0.02)
        now_ms = int(time.time() * 1000)
        portal.update_deal(first, {"hs_next_step": "changed after its page was read"},
                           at_ms=now_ms)
        portal.update_deal(last, {"hs_next_step": "changed later, read later"},
                           at_ms=now_ms + 1000)
        scan.join(timeout=120)
        portal.clear_faults()
        assert outcome["full"]["mode"] == "full" and outcome["full"]["status"] == "completed"
        landed = dict(query(db_conn, "select id, properties->>'hs_next_step' from "
                                     "raw_hubspot.deals where _scan_id = %s and id = any(%s)",
                            (outcome["full"]["scan_id"], [first, last])))
        assert landed[last] == "changed later, read later"  # read after its change
        assert landed[first] != "changed after its page was read"  # read before it
        inc = _scan(run_loader, env, tenant, "--lookback-seconds", "0")
    assert inc["mode"] == "incremental"
    steps = dict(query(db_conn, "select id, properties->>'hs_next_step' from raw_hubspot.deals "
                                "where _scan_id = %s", (inc["scan_id"],)))
    assert steps.get(first) == "changed after its page was read"


def _first_batch_taken(db_conn, tenant: str) -> bool:
    """Whether the tenant's running scan has taken its first batch (counted in its job)."""
    if query(db_conn, "select to_regclass('loader.scan_jobs')")[0][0] is None:
        return False
    return bool(query(db_conn, "select 1 from loader.scan_jobs where organization_id = %s "
                               "and status = 'running' and processed_items > 0", (tenant,)))
