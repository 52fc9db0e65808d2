"""``python -m loader lint`` gives the same answer whatever data the database in use holds.

The high-water marks and the integrity test render the tenants and scans they find as literals,
so sqlfluff, which lints the rendered SQL, saw different SQL after a scan: ``make lint`` failed
after ``make demo``. Lint compiles against an empty database of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.dbt import raw_data
from tests.dbt.conftest import build_in_process, connect, run_loader_cli

T0 = datetime(2025, 5, 1, 9, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
#: The files whose rendered SQL depends on the data (the marts' high-water marks, the
#: integrity test's scans).
DATA_RENDERED = ("dbt_project/models/marts/deals.sql",
                 "dbt_project/tests/marts/assert_deals_row_count_matches_staging.sql")


# The embedded server is where lint compiles, whichever database the tests use: once.
@pytest.mark.embedded_only
def test_lint_passes_on_a_database_with_scans_and_built_marts(
    scratch_databases,  # type: ignore[no-untyped-def]
) -> None:
    url = scratch_databases("lint")
    conn = connect(url, autocommit=False)
    raw_data.create_raw_tables(conn)
    for job, tenant in (("job-1", "acme"), ("job-2", "globex")):
        raw_data.add_scan_job(conn, job, tenant)
        raw_data.add_pipelines(conn, job, tenant, T0)
        raw_data.add_deal(conn, job, tenant, "1", T0, T0)
    conn.close()
    build_in_process(url, "--full-refresh")
    conn = connect(url, autocommit=False)
    raw_data.add_scan_job(conn, "job-3", "acme")
    raw_data.add_pipelines(conn, "job-3", "acme", T1)
    raw_data.add_deal(conn, "job-3", "acme", "2", T1, T1)
    conn.close()
    build_in_process(url)  # marks and a full build on record: what the literals come from

    run_loader_cli(url, "lint", *DATA_RENDERED)
