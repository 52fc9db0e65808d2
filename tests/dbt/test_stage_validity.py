"""The stage check of analytics.deals (tests/generic/valid_deal_stage.sql): a live deal's stage
must be a stage of its pipeline in its own tenant's portal (deal_stages); archived deals and
deals without a stage are not checked."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.dbt import raw_data
from tests.dbt.conftest import build_in_process, connect, dbt_in_process, execute

T0 = datetime(2025, 6, 1, 8, tzinfo=UTC)


def _stage_check(url: str) -> str:
    """The check's status (``pass``, or ``fail``: it found a deal with an invalid stage)."""
    statuses = dbt_in_process(url, "test", "--select", "test_name:valid_deal_stage")
    checks = [status for name, status in statuses.items() if name.startswith("valid_deal_stage")]
    assert len(checks) == 1, statuses
    return checks[0]


def test_a_deal_whose_stage_is_not_of_its_pipeline_in_its_portal_fails_the_check(
        scratch_databases) -> None:  # type: ignore[no-untyped-def]
    url = scratch_databases("stages")
    conn = connect(url, autocommit=False)
    raw_data.create_raw_tables(conn)
    for tenant in ("acme", "globex"):
        raw_data.add_scan_job(conn, f"job-{tenant}", tenant, completed_days_ago=1)
        raw_data.add_pipelines(conn, f"job-{tenant}", tenant, T0)
        raw_data.add_deal(conn, f"job-{tenant}", tenant, "1", T0, T0)  # default pipeline
        raw_data.add_deal(conn, f"job-{tenant}", tenant, "2", T0, T0,
                          pipeline="777", dealstage="1001")
    # Not checked: an archived deal, whatever its stage, and a deal without a stage.
    raw_data.add_deal(conn, "job-acme", "acme", "3", T0, T0, archived=True, dealstage="gone")
    raw_data.add_deal(conn, "job-acme", "acme", "4", T0, T0, dealstage=None)
    conn.close()
    build_in_process(url)
    assert _stage_check(url) == "pass"

    # A stage of the portal's other pipeline.
    execute(url, "update analytics.deals set dealstage = '1002' "
                 "where _tenant_id = 'acme' and id = '1'")
    assert _stage_check(url) == "fail"
    execute(url, "update analytics.deals set dealstage = 'appointmentscheduled' "
                 "where _tenant_id = 'acme' and id = '1'")
    assert _stage_check(url) == "pass"

    # A stage that only another tenant's portal has: acme's pipeline 777 loses stage 1001.
    execute(url, "delete from analytics.deal_stages "
                 "where _tenant_id = 'acme' and pipeline_id = '777' and stage_id = '1001'")
    assert _stage_check(url) == "fail"
    execute(url, "update analytics.deals set dealstage = '1002' "
                 "where _tenant_id = 'acme' and id = '2'")
    assert _stage_check(url) == "pass"

    # A stage without a pipeline.
    execute(url, "update analytics.deals set pipeline = null "
                 "where _tenant_id = 'globex' and id = '1'")
    assert _stage_check(url) == "fail"
