"""``python -m loader retention --days N [--dry-run]`` archives old completed scan jobs without
deleting any current deal (the cascade from scan_jobs would), and a --full-refresh afterwards
still rebuilds the same deals from the raw history."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.dbt.conftest import DEAL_ROWS, Warehouse, dbt_run_in_process, fetch, run_loader_cli

JOBS = "select id from {} order by id"


def test_retention_archives_only_jobs_no_current_deal_references(warehouse: Warehouse) -> None:
    deals_before = fetch(warehouse.url, DEAL_ROWS)
    live_before = fetch(warehouse.url, JOBS.format("loader.scan_jobs"))
    # job-a1 and job-g1 finished 200 days ago; every acme deal job-a1 read was re-read by
    # job-a2, but globex's current deals still come from job-g1. job-a2 is only 100 days old.
    dry = json.loads(run_loader_cli(warehouse.url, "retention", "--days", "150", "--dry-run",
                                    "--json").stdout)
    assert [job["id"] for job in dry["jobs"]] == ["job-a1"]
    assert fetch(warehouse.url, JOBS.format("loader.scan_jobs")) == live_before

    done = run_loader_cli(warehouse.url, "retention", "--days", "150")
    assert "archived 1 completed scan job(s)" in done.stdout and "scan-job-a1" in done.stdout
    assert fetch(warehouse.url, JOBS.format("loader.scan_jobs_archive")) == [("job-a1",)]
    for table in ("loader.scan_jobs", "analytics.scan_jobs"):
        remaining = {job for job, in fetch(warehouse.url, JOBS.format(table))}
        assert "job-a1" not in remaining and {"job-g1", "job-a2", "job-a0"} <= remaining
    assert fetch(warehouse.url, DEAL_ROWS) == deals_before  # nothing cascaded

    # The archived scan's raw rows still count: created_at of deals it first stored is kept.
    dbt_run_in_process(warehouse.url, "--full-refresh", "--select", "deals+")
    assert fetch(warehouse.url, DEAL_ROWS) == deals_before


@pytest.mark.embedded_only
def test_retention_rejects_a_bad_day_count(warehouse: Warehouse) -> None:
    proc = subprocess.run([sys.executable, "-m", "loader", "retention", "--days", "0"],
                          cwd=ROOT, env=dict(os.environ, DATABASE_URL=warehouse.url),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "at least 1" in proc.stderr
