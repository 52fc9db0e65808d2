"""Records that would break a constraint go to analytics.deals_quarantine with the reason and
the raw value, never fail the build nor vanish, and are counted in their scan's failed_items
(once, however often dbt builds). Also: how HubSpot's strings land typed in analytics.deals."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

from tests.dbt.conftest import Warehouse, fetch

QUARANTINE = (
    "select _tenant_id, deal_id, scan_job_id, reason, raw_value, version_stored, "
    "counted_by_loader from analytics.deals_quarantine where scan_job_id = %s"
)


def test_bad_records_are_quarantined_with_reason_and_raw_value(warehouse: Warehouse) -> None:
    rows = {(r[1], r[3]): r for r in fetch(warehouse.url, QUARANTINE, ("job-a1",))}
    assert set(rows) == {("2", "amount:unparseable"), ("3", "amount:negative"),
                         ("4", "unknown_stage"), (None, "loader:missing id")}
    assert rows[("2", "amount:unparseable")][4:] == ("N/A", True, False)
    assert rows[("3", "amount:negative")][4:] == ("-5", True, False)
    assert rows[("4", "unknown_stage")][4:] == ("bogusstage", False, False)
    loader_reject = rows[(None, "loader:missing id")]
    assert json.loads(loader_reject[4]) == {"id": None, "properties": {}}
    assert loader_reject[5:] == (False, True)
    assert all(r[0] == "acme" for r in rows.values())
    # The second scan re-read 2 and 3 unchanged: quarantined again, for that scan.
    again = {(r[1], r[3]) for r in fetch(warehouse.url, QUARANTINE, ("job-a2",))}
    assert again == {("2", "amount:unparseable"), ("3", "amount:negative")}


def test_quarantined_fields_do_not_drop_the_deal(warehouse: Warehouse) -> None:
    amounts = {r[0]: r[1] for r in fetch(
        warehouse.url, "select id, amount, properties ->> 'amount' from analytics.deals "
        "where _tenant_id = 'acme'")}
    assert amounts["2"] is None and amounts["3"] is None
    first = {(r[3], r[0]) for r in warehouse.deals["first"]}  # (_tenant_id, id)
    assert ("acme", "4") not in first  # the unknown stage was not stored...
    assert ("acme", "9") not in first  # ...nor the deal of a scan still running
    incremental = {(r[3], r[0]): r for r in warehouse.deals["incremental"]}
    assert incremental[("acme", "4")][7] == "closedwon"  # ...until a real stage came


def test_failed_items_count_each_quarantined_record_once(warehouse: Warehouse) -> None:
    # job-a1: 1 rejected by the loader itself + 3 records quarantined by dbt.
    assert warehouse.failed_items["first"]["job-a1"] == 4
    assert warehouse.failed_items["incremental"]["job-a1"] == 4
    assert warehouse.failed_items["incremental"]["job-a2"] == 2
    assert warehouse.failed_items["full_refresh"] == warehouse.failed_items["incremental"]
    mart = dict(fetch(warehouse.url, "select id, failed_items from analytics.scan_jobs"))
    live = dict(fetch(warehouse.url, "select id, failed_items from loader.scan_jobs"))
    assert mart == live
    (rate,), = fetch(warehouse.url,
                     "select success_rate from loader.scan_jobs where id = 'job-a2'")
    assert rate == "80.00%"  # (10 - 2) / 10


def test_hubspot_strings_land_typed(warehouse: Warehouse) -> None:
    columns = [c for c, in fetch(
        warehouse.url, "select column_name from information_schema.columns where "
        "table_schema = 'analytics' and table_name = 'deals' order by ordinal_position")]
    deals = {(r[3], r[0]): dict(zip(columns, r, strict=True))
             for r in warehouse.deals["incremental"]}
    assert deals[("acme", "1")]["amount"] == Decimal("100.50")
    assert deals[("acme", "5")]["amount"] == Decimal("2000.00")
    assert deals[("acme", "5")]["closedate"] == datetime(2024, 3, 31)  # date only
    assert deals[("acme", "4")]["closedate"] == datetime(2024, 4, 1, 9, 30, 0, 250000)  # ms
    assert deals[("acme", "7")]["createdate"] == datetime(2024, 1, 15, 10)  # epoch millis
    assert deals[("acme", "7")]["closedate"] is None  # empty
    assert deals[("acme", "6")]["dealname"] == "six new"  # latest hs_lastmodifieddate wins
    assert deals[("acme", "1")]["dealname"] == "acme one"
    assert deals[("globex", "1")]["dealname"] == "globex one"
    assert deals[("acme", "1")]["archived"] is False


def test_created_at_is_first_stored_and_updated_at_moves_only_on_change(
    warehouse: Warehouse,
) -> None:
    first = {(r[3], r[0]): r for r in warehouse.deals["first"]}
    later = {(r[3], r[0]): r for r in warehouse.deals["incremental"]}
    created, updated = -2, -1
    a1, a2 = (warehouse.times[k].replace(tzinfo=None) for k in ("a1", "a2"))
    # Re-read unchanged by job-a2: same created_at and updated_at, but the newer scan.
    assert later[("acme", "1")][created] == first[("acme", "1")][created] == a1
    assert later[("acme", "1")][updated] == first[("acme", "1")][updated] == a1
    assert later[("acme", "1")][1] == "job-a2"
    # Changed by job-a2: created_at stays, updated_at moves to when the change was stored.
    assert later[("acme", "5")][created] == a1
    assert later[("acme", "5")][updated] == a2
    # First stored by job-a2.
    assert later[("acme", "4")][created] == later[("acme", "4")][updated] == a2
