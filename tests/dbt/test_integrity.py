"""The staging-vs-mart integrity test (tests/marts/assert_deals_row_count_matches_staging.sql):
after a build on record it checks the deals of the scans finished since that build began (what
a merge could have changed), both ways; with no build on record, every deal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.dbt import raw_data
from tests.dbt.conftest import (
    build_in_process,
    connect,
    dbt_in_process,
    dbt_run_in_process,
    execute,
)

T0 = datetime(2025, 6, 1, 8, tzinfo=UTC)
INTEGRITY = "assert_deals_row_count_matches_staging"


def _integrity_test(url: str) -> str:
    """``dbt test`` of the integrity test alone (in this process, with the parsed project): its
    status, ``pass`` or ``fail`` (it found a mismatch); ``error`` if it could not run."""
    return dbt_in_process(url, "test", "--select", INTEGRITY)[INTEGRITY]


def test_integrity_is_checked_for_the_scans_since_the_last_build(scratch_databases) -> None:  # type: ignore[no-untyped-def]
    url = scratch_databases("integrity")
    conn = connect(url, autocommit=False)
    raw_data.create_raw_tables(conn)
    raw_data.add_scan_job(conn, "job-1", "acme", completed_days_ago=1)
    raw_data.add_pipelines(conn, "job-1", "acme", T0)
    raw_data.add_deal(conn, "job-1", "acme", "1", T0, T0)
    raw_data.add_deal(conn, "job-1", "acme", "2", T0, T0)
    conn.close()
    build_in_process(url)  # a build on record (loader.dbt_builds)
    assert _integrity_test(url) == "pass"

    # A scan finished after that build began, merged by a dbt run the loader did not record.
    conn = connect(url, autocommit=False)
    raw_data.add_scan_job(conn, "job-2", "acme")
    later = T0 + timedelta(hours=2)
    raw_data.add_deal(conn, "job-2", "acme", "1", later, later)
    raw_data.add_deal(conn, "job-2", "acme", "3", later, later)
    conn.close()
    dbt_run_in_process(url, "--select", "scan_jobs", "deals")
    assert _integrity_test(url) == "pass"

    # A deal of that scan lost from the mart is found ...
    execute(url, "delete from analytics.deals where id = '3'")
    assert _integrity_test(url) == "fail"
    build_in_process(url, "--full-refresh")
    assert _integrity_test(url) == "pass"

    # ... while one of an earlier scan is left to the full check, which runs when no build is
    # on record (and on every --full-refresh build).
    execute(url, "delete from analytics.deals where id = '2'")
    assert _integrity_test(url) == "pass"
    execute(url, "delete from loader.dbt_builds")
    assert _integrity_test(url) == "fail"
