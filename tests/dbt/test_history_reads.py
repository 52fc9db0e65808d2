"""An incremental build of ``analytics.deal_stage_history`` looks up the history of its new
versions through the raw tables' index on the parent row id; it does not read every entry.

The staging view is merged into the query that joins it (no WITH clause, and a union of only
the tables that exist); until 2026-12-07 it was not, and PostgreSQL could only hash the whole
history (1.3 million entries at 200,000 deals) against the new versions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from tests.dbt import raw_data
from tests.dbt.conftest import build_in_process, connect, fetch

T0 = datetime(2025, 4, 1, 8, tzinfo=UTC)

#: 20,000 deal versions with four history entries each, in the shape the loader lands them.
HISTORY = """
insert into raw_hubspot.deals_stage_history (value, changed_at, source_type, _dlt_root_id,
    _dlt_parent_id, _dlt_list_idx, _dlt_id)
select (array['appointmentscheduled', 'contractsent', 'closedwon', 'closedlost'])[1 + g % 4],
    timestamptz '2025-01-01' + make_interval(hours => g), 'CRM_UI',
    'bulk' || g / 4, 'bulk' || g / 4, g % 4, 'bulk-entry' || g
from generate_series(0, 79999) as g;
analyze raw_hubspot.deals_stage_history;
"""

#: What deal_stage_history's incremental select does with the new versions' row ids: joins the
#: staging view on deal_row_id (a handful of ids, as after a small incremental scan).
LOOKUP = """
explain (format json)
select history.deal_row_id, history.dealstage, history.changed_at
from staging.stg_hubspot__deal_stage_history as history
inner join (select 'bulk' || g as row_id from generate_series(100, 109) as g) as new_versions
    on history.deal_row_id = new_versions.row_id
"""


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _history_reads(url: str) -> list[tuple[str, str]]:
    """(table, node type) of each read of a raw history table in LOOKUP's plan."""
    (plan,) = fetch(url, LOOKUP)[0]
    plan = plan if isinstance(plan, list) else json.loads(plan)
    return sorted((node["Relation Name"], node["Node Type"])
                  for node in _nodes(plan[0]["Plan"])
                  if node.get("Relation Name") in ("deals_stage_history", "deals__stage_history"))


def test_the_new_versions_history_is_looked_up_through_the_index(
    scratch_databases,  # type: ignore[no-untyped-def]
) -> None:
    url = scratch_databases("history_reads")
    conn = raw_data.scanned(connect(url, autocommit=False), {"job-1": "acme"}, T0)
    raw_data.add_deal(conn, "job-1", "acme", "1", T0, T0,
                      history=[("appointmentscheduled", T0)])
    with conn.cursor() as cur:
        cur.execute(HISTORY)
    conn.commit()
    conn.close()
    build_in_process(url)  # on-run-start creates the index on _dlt_parent_id

    assert _history_reads(url) == [("deals_stage_history", "Index Scan")]

    # With the old child table beside it, both are looked up through their indexes.
    with connect(url).cursor() as cur:
        cur.execute("create table raw_hubspot.deals__stage_history "
                    "(like raw_hubspot.deals_stage_history including all)")
        cur.execute("insert into raw_hubspot.deals__stage_history "
                    "select * from raw_hubspot.deals_stage_history where _dlt_list_idx = 0")
        cur.execute("analyze raw_hubspot.deals__stage_history")
    build_in_process(url)
    assert _history_reads(url) == [("deals__stage_history", "Index Scan"),
                                   ("deals_stage_history", "Index Scan")]
    # And the marts still hold the history of both.
    assert fetch(url, "select count(*) from analytics.deal_stage_history "
                      "where _tenant_id = 'acme'") == [(1,)]
