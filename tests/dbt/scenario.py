"""The warehouse scenario: two tenants (acme, globex) sharing deal ids, two rounds of scans.

Round 1 - job-a1 (acme, completed 200 days ago; the loader itself rejected one record),
job-g1 (globex, 200 days ago), job-a0 (acme, still running):
  acme 1  a normal deal with a stage history
  acme 2  amount "N/A"              -> stored with amount null, quarantined (amount:unparseable)
  acme 3  amount "-5"               -> stored with amount null, quarantined (amount:negative)
  acme 4  stage "bogusstage"        -> not stored, quarantined (unknown_stage)
  acme 5  custom pipeline 777, amount "1e3", date-only closedate
  acme 6  twice in the batch        -> the later hs_lastmodifieddate wins ("six new")
  acme 9  read by job-a0, which has not finished -> not stored yet
  globex 1, 2  the same ids as acme's, other contents
Round 2 - job-a0 finishes; job-a2 (acme, 100 days ago) re-reads 1, 2, 3, 6 unchanged (1 with
only the latest entry of its stage history: the earlier one stays in deal_stage_history), 5 with
a new amount, 4 now in a real stage (with a history), and a new deal 7 (epoch-millisecond
createdate).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2.extensions

from tests.dbt.raw_data import add_deal, add_pipelines, add_rejected, add_scan_job, finish_scan_job

ACME, GLOBEX = "acme", "globex"


def _ago(days: float) -> datetime:
    return (datetime.now(UTC) - timedelta(days=days)).replace(microsecond=0)


def first_round(conn: psycopg2.extensions.connection, times: dict[str, datetime]) -> None:
    times["a1"] = t_a1 = _ago(200) - timedelta(minutes=2)
    times["g1"] = t_g1 = _ago(200) - timedelta(minutes=1)
    times["a0"] = t_a0 = _ago(150)
    add_scan_job(conn, "job-a1", ACME, completed_days_ago=200, failed_items=1)
    add_scan_job(conn, "job-g1", GLOBEX, completed_days_ago=200)
    add_scan_job(conn, "job-a0", ACME, status="running")
    add_pipelines(conn, "job-a1", ACME, t_a1)
    add_pipelines(conn, "job-g1", GLOBEX, t_g1)

    updated = datetime(2024, 3, 1, tzinfo=UTC)
    add_deal(conn, "job-a1", ACME, "1", t_a1, updated, dealname="acme one", amount="100.50",
             dealstage="contractsent",
             history=[("contractsent", datetime(2024, 2, 1, tzinfo=UTC)),
                      ("appointmentscheduled", datetime(2024, 1, 15, tzinfo=UTC))])
    add_deal(conn, "job-a1", ACME, "2", t_a1, updated, amount="N/A")
    add_deal(conn, "job-a1", ACME, "3", t_a1, updated, amount="-5")
    add_deal(conn, "job-a1", ACME, "4", t_a1, updated, dealstage="bogusstage")
    add_deal(conn, "job-a1", ACME, "5", t_a1, updated, pipeline="777", dealstage="1002",
             amount="1e3", closedate="2024-03-31")
    add_deal(conn, "job-a1", ACME, "6", t_a1, datetime(2024, 3, 5, tzinfo=UTC),
             dealname="six new")
    add_deal(conn, "job-a1", ACME, "6", t_a1, datetime(2024, 3, 2, tzinfo=UTC),
             dealname="six old")
    add_rejected(conn, "job-a1", ACME, t_a1, {"id": None, "properties": {}}, "missing id")
    add_deal(conn, "job-g1", GLOBEX, "1", t_g1, updated, dealname="globex one", amount="999")
    add_deal(conn, "job-g1", GLOBEX, "2", t_g1, updated, amount="7", dealstage="closedwon",
             closedate="2024-02-10T12:00:00Z")
    add_deal(conn, "job-a0", ACME, "9", t_a0, updated, dealname="nine")


def second_round(conn: psycopg2.extensions.connection, times: dict[str, datetime]) -> None:
    finish_scan_job(conn, "job-a0")
    times["a2"] = t_a2 = _ago(100) - timedelta(minutes=2)
    add_scan_job(conn, "job-a2", ACME, completed_days_ago=100)
    add_pipelines(conn, "job-a2", ACME, t_a2)
    updated = datetime(2024, 3, 1, tzinfo=UTC)
    add_deal(conn, "job-a2", ACME, "1", t_a2, updated, dealname="acme one", amount="100.50",
             dealstage="contractsent",
             history=[("contractsent", datetime(2024, 2, 1, tzinfo=UTC))])
    add_deal(conn, "job-a2", ACME, "2", t_a2, updated, amount="N/A")
    add_deal(conn, "job-a2", ACME, "3", t_a2, updated, amount="-5")
    add_deal(conn, "job-a2", ACME, "6", t_a2, datetime(2024, 3, 5, tzinfo=UTC),
             dealname="six new")
    add_deal(conn, "job-a2", ACME, "5", t_a2, datetime(2024, 4, 1, tzinfo=UTC), pipeline="777",
             dealstage="1002", amount="2000", closedate="2024-03-31")
    add_deal(conn, "job-a2", ACME, "4", t_a2, datetime(2024, 4, 1, tzinfo=UTC),
             dealstage="closedwon", closedate="2024-04-01T09:30:00.250Z",
             history=[("closedwon", datetime(2024, 4, 1, tzinfo=UTC)),
                      ("contractsent", datetime(2024, 3, 20, tzinfo=UTC))])
    add_deal(conn, "job-a2", ACME, "7", t_a2, datetime(2024, 4, 2, tzinfo=UTC),
             createdate="1705312800000", closedate="")
