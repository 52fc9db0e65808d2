"""The build after scans chooses between a merge and a rebuild from the raw history
(``loader.transform.rebuild_is_cheaper``): scans that re-landed much of the warehouse (a
full-refresh scan) are rebuilt with ``--full-refresh``, small increments merged, on the worker
and after ``run``; the rebuilt marts keep their deals and their row-level security.

A scratch database of its own (the share is of the whole raw history, which other tests' rows
would change), the real sandbox on loopback, the loader as subprocesses. The threshold is
lowered from 50,000 versions to 1 through ``LOADER_REBUILD_MIN_VERSIONS`` so that 300 deals
decide as 300,000 would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loader import transform
from loader.sandbox import SandboxServer
from tests.conftest import LoaderRun, unique_tenant, write_tenants_file
from tests.dbt.conftest import connect, fetch, with_user

DEALS = 300


def _ok(run: LoaderRun) -> LoaderRun:
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def _worker_builds(proc: LoaderRun) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return [e for e in events if e["event"] == "build"]


def _last_build(url: str) -> tuple[bool, str]:
    ((full_refresh, requested_by),) = fetch(
        url, "select full_refresh, requested_by from loader.dbt_builds "
             "order by started_at desc limit 1")
    return full_refresh, requested_by


def test_a_full_refresh_scan_is_rebuilt_and_an_increment_merged(
    scratch_databases, run_loader, analyst_login: str,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    url = scratch_databases("rebuild")
    tenant, other = unique_tenant("rebuild"), unique_tenant("rebuild-other")
    tokens = {tenant: "tok-rebuild-0123456789abcdef", other: "tok-rebuild-other-0123456789"}
    env = dict(DATABASE_URL=url, LOADER_REBUILD_MIN_VERSIONS="1",
               **write_tenants_file(tmp_path / "tenants.toml", tokens))
    with SandboxServer(portals=tokens, deals=DEALS, seed=57) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        # First scans and the first build: no mart yet, so a whole build, not a rebuild.
        _ok(run_loader("submit", "--all", env=env))
        first = _worker_builds(_ok(run_loader("worker", "--once", "--json", env=env)))
        # A full-refresh scan of one tenant re-lands its 300 deals: 300 new of 900 raw
        # versions, over 1 + 0.15 x 900. The worker rebuilds.
        _ok(run_loader("submit", "--tenant", tenant, "--full-refresh", env=env))
        second = _worker_builds(_ok(run_loader("worker", "--once", "--json", env=env)))
        (refreshed,) = fetch(url, "select scan_id from loader.scan_jobs "
                                  "where organization_id = %s order by created_at desc limit 1",
                             (tenant,))
        rebuilt = dict(fetch(url, "select _tenant_id, count(*) from analytics.deals group by 1"))
        scans = fetch(url, "select distinct _scan_id from analytics.deals where _tenant_id = %s",
                      (tenant,))
        # Then an increment (nothing changed: the lookback's few deals at most, under
        # 1 + 0.15 x 900), merged, here after run.
        run = _ok(run_loader("run", "--tenant", tenant, "--json", env=env))

    assert [b["full_refresh"] for b in first] == [False] and first[0]["ok"]
    (rebuild,) = second
    assert rebuild["ok"] and rebuild["full_refresh"] is True
    assert rebuild["requested_by"] == "worker" and rebuild["landed_versions"] == DEALS
    assert "rebuilding the marts" not in run.stderr
    assert _last_build(url) == (False, "transform")

    # The rebuilt mart holds every deal of both tenants, this tenant's from its last scan.
    assert rebuilt == {tenant: DEALS, other: DEALS}
    assert scans == [refreshed]
    # ... and its row-level security: a non-owner analyst sees one tenant's deals, or none.
    analyst = connect(with_user(url, analyst_login))
    try:
        with analyst.cursor() as cur:
            cur.execute("select count(*) from analytics.deals")
            assert cur.fetchone() == (0,)
            cur.execute("set app.current_tenant_id = %s", (other,))
            cur.execute("select count(distinct _tenant_id), count(*) from analytics.deals")
            assert cur.fetchone() == (1, DEALS)
    finally:
        analyst.close()


def test_rebuild_is_cheaper_weighs_the_new_versions_against_the_raw_history(
    scratch_databases, run_loader, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    url = scratch_databases("rebuild_rule")
    monkeypatch.delenv("LOADER_REBUILD_MIN_VERSIONS", raising=False)
    assert transform.rebuild_is_cheaper(10**6, url) is False  # no mart yet: a whole build
    with connect(url).cursor() as cur:
        cur.execute("create schema raw_hubspot; create schema analytics; "
                    "create table analytics.deals (id text); "
                    "create table raw_hubspot.deals as select g::text as id "
                    "from generate_series(1, 400000) as g")
    # 50,000 + 0.15 x 400,000 = 110,000 new versions at least.
    assert transform.rebuild_is_cheaper(49_999, url) is False
    assert transform.rebuild_is_cheaper(109_999, url) is False
    assert transform.rebuild_is_cheaper(110_000, url) is True
    assert transform.rebuild_is_cheaper(200_000, url) is True
    monkeypatch.setenv("LOADER_REBUILD_MIN_VERSIONS", "10")
    assert transform.rebuild_is_cheaper(60_010, url) is True
    assert transform.rebuild_is_cheaper(60_009, url) is False
    # A bad value is a one-line error before any work, from run and worker alike.
    for command in (["run", "--tenant", "acme"], ["worker", "--once"]):
        proc = run_loader(*command, env={"DATABASE_URL": url,
                                         "LOADER_REBUILD_MIN_VERSIONS": "1e9"})
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == ("error: LOADER_REBUILD_MIN_VERSIONS must be a whole "
                                       "number of deal versions (0 or more), not '1e9'")
    assert fetch(url, "select count(*) from information_schema.tables "
                      "where table_schema = 'loader'") == [(0,)]  # nothing started
