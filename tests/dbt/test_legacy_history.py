"""Stage history landed by loaders from before the Arrow batches (dlt's child table
``raw_hubspot.deals__stage_history``) stays part of ``analytics.deal_stage_history`` next to
what the loader writes now (``raw_hubspot.deals_stage_history``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.dbt import raw_data
from tests.dbt.conftest import connect, dbt_run_in_process, fetch

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)


def test_history_in_the_old_child_table_is_read_with_the_new_table(scratch_databases) -> None:  # type: ignore[no-untyped-def]
    url = scratch_databases("legacy")
    conn = connect(url, autocommit=False)
    raw_data.create_raw_tables(conn)
    raw_data.add_scan_job(conn, "job-1", "acme")
    raw_data.add_pipelines(conn, "job-1", "acme", T0)
    old_row = raw_data.add_deal(conn, "job-1", "acme", "1", T0, T0)
    raw_data.add_deal(conn, "job-1", "acme", "2", T0, T0,
                      history=[("appointmentscheduled", T0 - timedelta(days=2))])
    with conn.cursor() as cur:
        cur.execute("create table raw_hubspot.deals__stage_history "
                    "(like raw_hubspot.deals_stage_history including all)")
        cur.execute(
            "insert into raw_hubspot.deals__stage_history (value, changed_at, source_type, "
            "_dlt_root_id, _dlt_parent_id, _dlt_list_idx, _dlt_id) "
            "values ('appointmentscheduled', %s, 'CRM_UI', %s, %s, 0, 'legacy-1')",
            (T0 - timedelta(days=1), old_row, old_row))
    conn.commit()
    conn.close()
    dbt_run_in_process(url, "--select", "+deal_stage_history")
    rows = fetch(url, "select deal_id, dealstage, valid_from from analytics.deal_stage_history "
                      "where _tenant_id = 'acme' order by deal_id")
    naive = T0.replace(tzinfo=None)  # the marts keep UTC as timestamp without time zone
    assert rows == [("1", "appointmentscheduled", naive - timedelta(days=1)),
                    ("2", "appointmentscheduled", naive - timedelta(days=2))]
