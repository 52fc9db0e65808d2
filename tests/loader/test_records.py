"""``records.deal_batch``: HubSpot deal objects to the raw tables' Arrow rows."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

from loader.hubspot.records import (
    DEALS_SCHEMA,
    EPOCH,
    STAGE_HISTORY_SCHEMA,
    Stamp,
    deal_batch,
    parse_hubspot_datetime,
    parse_hubspot_ms,
    row_ids,
)

STAMP = Stamp("acme", "scan-1", "job-1", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


def _deal(deal_id: str, **extra: object) -> dict:
    deal = {
        "id": deal_id,
        "properties": {"dealname": f"Deal {deal_id}", "amount": None, "dealstage": "won"},
        "createdAt": "2025-01-01T00:00:00Z",
        "updatedAt": "2025-06-01T12:00:00.250Z",
        "archived": False,
    }
    deal.update(extra)
    return deal


def test_deals_and_their_stage_history_become_linked_typed_rows() -> None:
    history = [
        {"value": "won", "timestamp": "2025-06-01T12:00:00.250Z", "sourceType": "CRM_UI"},
        {"value": "open", "timestamp": "1735689600000", "sourceType": "IMPORT"},
    ]
    batch = deal_batch(
        [_deal("1", propertiesWithHistory={"dealstage": history}), _deal("2")], STAMP)
    assert batch.deals.schema == DEALS_SCHEMA
    assert batch.stage_history is not None and batch.stage_history.schema == STAGE_HISTORY_SCHEMA
    deals = batch.deals.to_pylist()
    assert [d["id"] for d in deals] == ["1", "2"]
    assert json.loads(deals[0]["properties"]) == _deal("1")["properties"]  # nulls kept
    assert deals[0]["updated_at"] == datetime(2025, 6, 1, 12, 0, 0, 250000, tzinfo=UTC)
    assert deals[0]["archived_at"] is None and deals[0]["archived"] is False
    assert {d["_tenant_id"] for d in deals} == {"acme"}
    assert deals[0]["_extracted_at"] == STAMP.extracted_at
    assert len({d["_dlt_id"] for d in deals}) == 2
    rows = batch.stage_history.to_pylist()
    assert [(r["value"], r["_dlt_list_idx"]) for r in rows] == [("won", 0), ("open", 1)]
    assert {r["_dlt_parent_id"] for r in rows} == {r["_dlt_root_id"] for r in rows} == {
        deals[0]["_dlt_id"]}
    assert rows[1]["changed_at"] == datetime(2025, 1, 1, tzinfo=UTC)  # epoch ms accepted
    assert batch.max_updated_us == int(deals[0]["updated_at"].timestamp() * 1_000_000)
    assert batch.rejected == []


def test_records_that_cannot_be_stored_are_kept_with_their_reason() -> None:
    bad = [
        {"properties": {}},
        _deal("x", properties="not an object"),
        _deal("y", updatedAt="yesterday", properties={"hs_lastmodifieddate": None}),
        _deal("z", properties={"description": "a\x00b"}, updatedAt="2025-07-01T00:00:00Z"),
        "not even an object",
    ]
    batch = deal_batch([_deal("ok"), *bad], STAMP)
    assert [d["id"] for d in batch.deals.to_pylist()] == ["ok"]
    assert batch.stage_history is None
    reasons = [(r["deal_id"], r["reason"]) for r in batch.rejected]
    assert reasons == [
        (None, "missing or invalid 'id'"),
        ("x", "missing 'properties' object"),
        ("y", "missing or unparseable 'updatedAt'"),
        ("z", "contains a NUL character (\\u0000), which PostgreSQL cannot store"),
        (None, "not a JSON object"),
    ]
    assert batch.rejected[3]["payload"]["properties"]["description"] == "a\ufffdb"
    assert batch.rejected[4]["payload"] == "not even an object"
    assert all(r["_scan_id"] == "scan-1" for r in batch.rejected)
    # The NUL deal's change is known: the cursor may move past it (it is kept, not lost).
    assert batch.max_updated_us == int(datetime(2025, 7, 1, tzinfo=UTC).timestamp() * 1_000_000)


def test_row_ids_are_unique_and_increase_from_call_to_call() -> None:
    first, second = row_ids(3), row_ids(70_000)
    together = first + second
    assert len(set(together)) == len(together)
    assert together == sorted(together)  # in byte order, as PostgreSQL's C collation sorts
    assert {len(i) for i in together} == {20}
    assert row_ids(0) == []


def test_the_cursor_comes_from_the_resource_state_or_from_dlt_incremental_state() -> None:
    """Scans keep their cursor in the deals resource's state; a pipeline from before that keeps
    the value its ``dlt.sources.incremental`` stored, so its next scan stays incremental."""
    from loader.hubspot import _stored_cursor

    assert _stored_cursor({}) is None
    legacy = {"incremental": {"updated_at": {"last_value": "2025-06-01T12:00:00.250000+00:00"}}}
    assert _stored_cursor(legacy) == datetime(2025, 6, 1, 12, 0, 0, 250000, tzinfo=UTC)
    assert _stored_cursor({"incremental": {"updated_at": {
        "last_value": datetime(2025, 6, 1, tzinfo=UTC)}}}) == datetime(2025, 6, 1, tzinfo=UTC)
    both = {**legacy, "cursor": "2025-07-01T00:00:00+00:00"}
    assert _stored_cursor(both) == datetime(2025, 7, 1, tzinfo=UTC)


def test_the_cursor_only_moves_forward_from_either_kind_of_stored_cursor() -> None:
    from loader.hubspot import _advance_cursor

    june, july = datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC)
    state: dict = {}
    _advance_cursor(state, None)
    assert state == {}
    _advance_cursor(state, int(july.timestamp() * 1_000_000))
    assert state["cursor"] == july.isoformat()
    _advance_cursor(state, int(june.timestamp() * 1_000_000))  # a lookback re-read: no step back
    assert state["cursor"] == july.isoformat()
    legacy = {"incremental": {"updated_at": {"last_value": july.isoformat()}}}
    _advance_cursor(legacy, int(june.timestamp() * 1_000_000))
    assert "cursor" not in legacy  # the older pipeline's cursor still stands


def test_hubspot_times_are_parsed_to_the_exact_millisecond() -> None:
    # Through a float (timestamp() * 1000) these came out 1 ms early: about one time in a
    # hundred before 2017 or after 2030.
    assert parse_hubspot_ms("2004-09-30T13:38:11.616Z") == 1_096_551_491_616
    assert parse_hubspot_datetime("2004-09-30T13:38:11.616Z") == datetime(
        2004, 9, 30, 13, 38, 11, 616000, tzinfo=UTC)
    rng = random.Random(5)
    for _ in range(20_000):
        ms = rng.randint(-2_208_988_800_000, 4_102_444_800_000)  # 1900 to 2100
        text = (EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")
        assert parse_hubspot_ms(text.replace("+00:00", "Z")) == ms, text
        if ms >= 0:  # epoch ms as text too
            assert parse_hubspot_ms(str(ms)) == ms
    batch = deal_batch([_deal("1", createdAt="2004-09-30T13:38:11.616Z")], STAMP)
    assert batch.deals.column("created_at")[0].value == 1_096_551_491_616_000  # µs
