"""The scan control plane, end to end: lifecycle and progress, cancel from another process,
SIGKILL then re-run, one scan per tenant, ``run --all --concurrency``, id validation.

Real sandbox HubSpot on loopback, real PostgreSQL, the loader as a subprocess. Scans are made slow
enough to cancel or kill by the sandbox's ``delay`` fault on the deals endpoints, never by sleeps
in the test; the test waits on the live job record instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from loader import scan_jobs
from loader.sandbox import SandboxServer
from tests.conftest import query, unique_tenant, write_tenants_file

BATCH = 10
DEALS_PATH = "/crm/v3/objects/deals"
#: What a deal *is* in the raw table: everything but the scan's own stamps.
RAW_CONTENT = (
    "id, properties::text, archived, archived_at, created_at, updated_at"
)


def _popen_loader(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """Start ``python -m loader ARGS`` without waiting; output goes to files under tmp_path."""
    out = open(tmp_path / f"out-{time.monotonic_ns()}.txt", "w+")  # noqa: SIM115
    err = open(tmp_path / f"err-{time.monotonic_ns()}.txt", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "loader", *args],
        cwd=tmp_path, env={**os.environ, **env}, stdout=out, stderr=err, text=True,
    )
    proc.out_file, proc.err_file = out, err  # type: ignore[attr-defined]
    return proc


def _completed_jobs(loader_home: Path, tenant: str, table_prefix: str) -> list[Path]:
    """Job files of ``table_prefix*`` tables that dlt has loaded (completed_jobs) for a tenant
    whose load package is still pending."""
    return sorted(loader_home.glob(f"dlt/*{tenant}*/load/normalized/*/completed_jobs/"
                                   f"{table_prefix}*"))


def _state_rows(db_conn, tenant: str) -> list[tuple]:
    """dlt's state rows of a tenant's pipeline, oldest first (``_dlt_id``, ``version``)."""
    return query(db_conn, "select _dlt_id, version from raw_hubspot._dlt_pipeline_state "
                          "where pipeline_name = %s order by created_at, _dlt_id",
                 (f"hubspot_{tenant}",))


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    code = proc.wait(timeout=timeout)
    texts = []
    for handle in (proc.out_file, proc.err_file):  # type: ignore[attr-defined]
        handle.seek(0)
        texts.append(handle.read())
        handle.close()
    return code, texts[0], texts[1]


def _wait_for(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something truthy (a condition, never a duration)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _running_job(db_conn, tenant: str, at_least: int = 1) -> Callable[[], Any]:
    def check() -> Any:
        if to_regclass(db_conn, "loader.scan_jobs") is None:
            return None
        rows = query(db_conn, "select scan_id, processed_items from loader.scan_jobs "
                              "where organization_id = %s and status = 'running'", (tenant,))
        return rows[0] if rows and rows[0][1] >= at_least else None
    return check


def to_regclass(db_conn, name: str) -> Any:
    return query(db_conn, "select to_regclass(%s)", (name,))[0][0]


def _job(db_conn, scan_id: str) -> dict[str, Any]:
    with db_conn.cursor() as cur:
        cur.execute("select * from loader.scan_jobs where scan_id = %s", (scan_id,))
        names = [c.name for c in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))


def _raw_count(db_conn, scan_id: str, table: str = "deals") -> int:
    return query(db_conn, f"select count(*) from raw_hubspot.{table} where _scan_id = %s",
                 (scan_id,))[0][0]


def _slow(portal: Any, seconds: float) -> None:
    """Every deals request (list, search, read) of the portal waits ``seconds``."""
    portal.add_fault("delay", delay=seconds, every=1, path=DEALS_PATH)


def _json_result(stdout: str) -> list[dict[str, Any]]:
    return json.loads(stdout[: stdout.rindex("]") + 1])


# --- lifecycle and progress -------------------------------------------------------------------


def test_progress_counts_equal_rows_landed_and_status_reads_the_live_record(
    run_loader, db_conn, tmp_path: Path
) -> None:
    tenant = unique_tenant("prog")
    tokens = {tenant: "tok-prog-0123456789abcdef"}
    env = write_tenants_file(tmp_path / "tenants.toml", tokens)
    with SandboxServer(portals=tokens, deals=230, seed=17) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        served = sandbox.portal(tenant).deal_ids()
        first = run_loader("run", "--tenant", tenant, "--batch-size", "7", "--no-transform",
                           "--progress", "always", env=env)
        assert first.returncode == 0, first.stderr
        changed = served[:5]
        for deal_id in changed:
            sandbox.portal(tenant).update_deal(deal_id, {"hs_next_step": "call back"})
        second = run_loader("run", "--tenant", tenant, "--no-transform", "--json",
                            "--lookback-seconds", "0", env=env)
        assert second.returncode == 0, second.stderr

    (first_id,) = [r[0] for r in query(
        db_conn, "select scan_id from loader.scan_jobs where organization_id = %s "
                 "and scan_type = 'deals_full'", (tenant,))]
    (second_summary,) = _json_result(second.stdout)
    for scan_id, mode in ((first_id, "full"), (second_summary["scan_id"], "incremental")):
        job = _job(db_conn, scan_id)
        assert job["scan_type"] == f"deals_{mode}"
        landed = _raw_count(db_conn, job["scan_id"])
        rejected = _raw_count(db_conn, job["scan_id"], "deals_rejected") if to_regclass(
            db_conn, "raw_hubspot.deals_rejected") else 0
        assert job["processed_items"] == landed > 0
        assert job["failed_items"] == rejected
        assert job["total_items"] == landed + rejected
        expected_rate = f"{(job['total_items'] - rejected) * 100 / job['total_items']:.2f}%"
        assert job["success_rate"] == expected_rate
        assert job["status"] == "completed" and job["error_message"] is None
        assert job["started_at"] <= job["completed_at"]
        assert job["created_at"] <= job["started_at"]
    assert second_summary["processed_items"] == _job(
        db_conn, second_summary["scan_id"])["processed_items"]
    first_job = _job(db_conn, first_id)
    # The human run drew a progress bar (deals of total) on stderr and a summary table.
    done = first_job["processed_items"] + first_job["failed_items"]
    assert f"{tenant}: deals" in first.stderr
    assert f"{done}/{first_job['total_items']}" in first.stderr
    assert "scan summary" in first.stdout and first_id in first.stdout
    assert first_job["success_rate"] in first.stdout
    assert first_job["batch_size"] == 7
    assert first_job["total_items"] == len(served) + _archived_count(db_conn, first_job)
    # The incremental scan read what changed (and nothing outside its window).
    second_id = _json_result(second.stdout)[0]["scan_id"]
    assert _job(db_conn, second_id)["batch_size"] == 50  # the default
    assert {r[0] for r in query(db_conn, "select id from raw_hubspot.deals where _scan_id = %s",
                                (second_id,))} >= set(changed)

    # status and scans read the live record.
    status = run_loader("status", second_id, "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["status"] == "completed" and shown["scan_id"] == second_id
    assert shown["processed_items"] == _job(db_conn, second_id)["processed_items"]
    human = run_loader("scans", "--tenant", tenant)  # whole scan ids: operators copy them
    assert human.returncode == 0 and second_id in human.stdout and first_id in human.stdout
    listed = run_loader("scans", "--tenant", tenant, "--json")
    assert [j["scan_id"] for j in json.loads(listed.stdout)] == [
        second_id, first_job["scan_id"]]
    active = run_loader("scans", "--active", "--tenant", tenant, "--json")
    assert json.loads(active.stdout) == []
    missing = run_loader("status", "no-such-scan-123")
    assert missing.returncode != 0
    assert missing.stderr.strip() == "error: no scan with id 'no-such-scan-123'"


def _archived_count(db_conn, job: dict[str, Any]) -> int:
    return query(db_conn, "select count(*) from raw_hubspot.deals where _scan_id = %s "
                          "and archived", (job["scan_id"],))[0][0]


def test_status_never_moves_backwards(run_loader, db_conn, tmp_path: Path) -> None:
    tenant = unique_tenant("back")
    tokens = {tenant: "tok-back-0123456789abcdef"}
    env = write_tenants_file(tmp_path / "tenants.toml", tokens)
    with SandboxServer(portals=tokens, deals=20, seed=2) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        result = run_loader("run", "--tenant", tenant, "--no-transform", "--json", env=env)
    assert result.returncode == 0, result.stderr
    scan_id = _json_result(result.stdout)[0]["scan_id"]
    for status in ("running", "pending", "failed", "cancelled"):
        with pytest.raises(psycopg2.errors.RaiseException, match="already completed"):
            query(db_conn, "update loader.scan_jobs set status = %s where scan_id = %s "
                           "returning 1", (status, scan_id))
    # A running job cannot go back to pending (a job made here, never run).
    query(db_conn, "insert into loader.scan_jobs (id, scan_id, status, scan_type, config, "
                   "organization_id) values (%s, %s, 'running', 'deals_full', '{}', %s) "
                   "returning 1", (scan_id + "-x", scan_id + "-x", tenant))
    with pytest.raises(psycopg2.errors.RaiseException, match="cannot go back to pending"):
        query(db_conn, "update loader.scan_jobs set status = 'pending' where scan_id = %s "
                       "returning 1", (scan_id + "-x",))
    with pytest.raises(psycopg2.errors.CheckViolation):
        query(db_conn, "update loader.scan_jobs set status = 'paused' where scan_id = %s "
                       "returning 1", (scan_id + "-x",))
    # The seed's success-rate formula as the loader stores it when a job ends.
    query(db_conn, "update loader.scan_jobs set total_items = 200, processed_items = 199, "
                   "failed_items = 1 where scan_id = %s returning 1", (scan_id + "-x",))
    job = scan_jobs.ScanJob(id=scan_id + "-x", scan_id=scan_id + "-x", tenant_id=tenant)
    assert scan_jobs.finish(db_conn, job, "failed", "test") == "failed"
    ended = _job(db_conn, scan_id + "-x")
    assert ended["success_rate"] == "99.50%" == scan_jobs.success_rate(200, 1)
    assert ended["completed_at"] is not None and ended["error_message"] == "test"
    query(db_conn, "delete from loader.scan_jobs where scan_id = %s returning 1",
          (scan_id + "-x",))
    assert _job(db_conn, scan_id)["status"] == "completed"


# --- control ------------------------------------------------------------------------------------


def test_cancel_from_another_process_stops_within_one_batch_with_consistent_tables(
    run_loader, db_conn, tmp_path: Path
) -> None:
    tenant = unique_tenant("cancel")
    tokens = {tenant: "tok-cancel-0123456789abcdef"}
    env = write_tenants_file(tmp_path / "tenants.toml", tokens)
    with SandboxServer(portals=tokens, deals=2000, seed=23) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        _slow(sandbox.portal(tenant), 0.5)
        proc = _popen_loader(tmp_path, env, "run", "--tenant", tenant, "--batch-size",
                             str(BATCH), "--no-transform")
        try:
            scan_id, _ = _wait_for(_running_job(db_conn, tenant, at_least=2 * BATCH),
                                   "the scan to load two batches")
            cancel = run_loader("cancel", scan_id)
        finally:
            code, out, err = _finish(proc)
    assert cancel.returncode == 0, cancel.stderr
    at_cancel = int(cancel.stdout.split(" cancelled at ")[1].split()[0])
    assert at_cancel >= 2 * BATCH

    assert code != 0
    assert f"scan {scan_id} for tenant {tenant} cancelled: Cancelled by user" in err
    job = _job(db_conn, scan_id)
    assert job["status"] == "cancelled" and job["error_message"] == "Cancelled by user"
    assert job["completed_at"] is not None
    # Stopped within one batch of the cancel, short of the whole portal.
    assert at_cancel <= job["processed_items"] <= at_cancel + BATCH
    assert job["processed_items"] < 1000
    # What it counted is exactly what landed: whole batches, no half batch.
    assert _raw_count(db_conn, scan_id) == job["processed_items"]

    # Cancelling a finished scan says so and changes nothing.
    again = run_loader("cancel", scan_id)
    assert again.returncode != 0
    assert again.stderr.strip() == f"error: scan {scan_id} is already cancelled; nothing changed"
    assert _job(db_conn, scan_id) == job
    assert "Cancelled by user" in out + err


def test_second_run_for_a_tenant_is_refused_naming_the_running_scan(
    run_loader, db_conn, tmp_path: Path
) -> None:
    tenant = unique_tenant("lock")
    tokens = {tenant: "tok-lock-0123456789abcdef"}
    env = write_tenants_file(tmp_path / "tenants.toml", tokens)
    with SandboxServer(portals=tokens, deals=2000, seed=29) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        _slow(sandbox.portal(tenant), 0.5)
        proc = _popen_loader(tmp_path, env, "run", "--tenant", tenant, "--batch-size",
                             str(BATCH), "--no-transform")
        try:
            scan_id, _ = _wait_for(_running_job(db_conn, tenant), "the first scan to run")
            second = run_loader("run", "--tenant", tenant, "--no-transform", env=env)
            jobs_meanwhile = query(db_conn, "select scan_id, status from loader.scan_jobs "
                                            "where organization_id = %s", (tenant,))
            active = run_loader("scans", "--active", "--tenant", tenant, "--json")
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl-C in the first terminal: a cancel
            code, _, err = _finish(proc)
    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith(f"error: tenant {tenant} already has a running scan {scan_id}")
    # The refused run made no job and left the running one alone.
    assert jobs_meanwhile == [(scan_id, "running")]
    # Ctrl-C stopped the first scan at a batch boundary, keeping what it had taken.
    job = _job(db_conn, scan_id)
    assert code != 0 and job["status"] == "cancelled"
    assert job["error_message"] == "Cancelled by user (Ctrl-C)"
    assert f"scan {scan_id} for tenant {tenant} cancelled" in err
    assert _raw_count(db_conn, scan_id) == job["processed_items"] < 2000
    (listed,) = json.loads(active.stdout)
    assert listed["scan_id"] == scan_id and listed["status"] == "running"
    assert listed["loader_alive"] is True


def test_sigkill_then_rerun_marks_interrupted_and_matches_an_uninterrupted_scan(
    run_loader, db_conn, tmp_path: Path
) -> None:
    killed, reference = unique_tenant("kill"), unique_tenant("ref")
    token = "tok-kill-0123456789abcdef"
    # Both loader tenants read the same sandbox portal: identical HubSpot data.
    env = write_tenants_file(tmp_path / "tenants.toml", {killed: token, reference: token})
    with SandboxServer(portals={"portal": token}, deals=350, seed=31) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        portal = sandbox.portal("portal")
        _slow(portal, 0.5)
        proc = _popen_loader(tmp_path, env, "run", "--tenant", killed, "--batch-size",
                             str(BATCH), "--no-transform")
        try:
            dead_scan, _ = _wait_for(_running_job(db_conn, killed, at_least=6 * BATCH),
                                     "the scan to be well under way")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            code, _, _ = _finish(proc)
        assert code == -signal.SIGKILL
        portal.clear_faults()
        # The killed loader's job stays running, but no loader holds its tenant lock.
        assert _job(db_conn, dead_scan)["status"] == "running"
        stale = run_loader("status", dead_scan, "--json")
        assert json.loads(stale.stdout)["loader_alive"] is False
        rerun = run_loader("run", "--tenant", killed, "--batch-size", str(BATCH),
                           "--no-transform", "--json", env=env)
        assert rerun.returncode == 0, rerun.stderr
        clean = run_loader("run", "--tenant", reference, "--batch-size", str(BATCH),
                           "--no-transform", "--json", env=env)
        assert clean.returncode == 0, clean.stderr
        served = len(portal.deal_ids())

    dead = _job(db_conn, dead_scan)
    assert dead["status"] == "failed" and dead["error_message"].startswith("interrupted")
    new_scan = _json_result(rerun.stdout)[0]["scan_id"]
    assert _job(db_conn, new_scan)["config"]["resumed_after"] == [dead_scan]

    # Raw: the latest version of every deal is the same for both tenants, nothing missing.
    latest = (
        f"select {RAW_CONTENT} from (select distinct on (id) * from raw_hubspot.deals "
        "where _tenant_id = %s order by id, _extracted_at desc) as latest order by id"
    )
    raw_killed = query(db_conn, latest, (killed,))
    assert raw_killed == query(db_conn, latest, (reference,))
    assert len([r for r in raw_killed if not r[2]]) == served

    # analytics.deals, built by dbt, is the same row for row (business columns).
    built = run_loader("dbt", "run", "--select", "+deals")  # models only: tests are dbt's
    assert built.returncode == 0, built.stdout[-3000:]
    columns = [c for (c,) in query(
        db_conn, "select column_name from information_schema.columns where table_schema = "
                 "'analytics' and table_name = 'deals' order by ordinal_position")
        if not c.startswith("_") and c not in ("scan_job_id", "created_at", "updated_at")]
    select = ", ".join(f"{c}::text" for c in columns)
    rows = {t: query(db_conn, f"select {select} from analytics.deals where _tenant_id = %s "
                              "order by id", (t,)) for t in (killed, reference)}
    assert len(rows[killed]) >= served
    assert rows[killed] == rows[reference]


def test_sigkill_while_loading_then_rerun_loads_the_pending_package_once(
    run_loader, db_conn, database_url: str, loader_home: Path, tmp_path: Path
) -> None:
    """Killed after extracting, while loading: the next run loads what the dead scan left in
    its dlt working folder (rows and cursor together), exactly once, then scans on from it."""
    tenant = unique_tenant("killload")
    token = "tok-killload-0123456789abcdef"
    env = write_tenants_file(tmp_path / "tenants.toml", {tenant: token})
    with SandboxServer(portals={tenant: token}, deals=400, seed=47) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        if to_regclass(db_conn, "raw_hubspot.deals") is None:  # a fresh database: create it
            warm = run_loader("run", "--tenant", unique_tenant("warm"), "--no-transform",
                              env={**env, "HUBSPOT_ACCESS_TOKEN": token})
            assert warm.returncode == 0, warm.stderr
        served = len(sandbox.portal(tenant).deal_ids())
        # Hold back every write to raw_hubspot.deals (reads go on): the scan extracts and
        # normalizes, then waits at its load, where it is killed.
        blocker = psycopg2.connect(database_url)
        try:
            with blocker.cursor() as cur:
                cur.execute("lock table raw_hubspot.deals in share mode")
            proc = _popen_loader(tmp_path, env, "run", "--tenant", tenant, "--batch-size",
                                 "50", "--no-transform")
            try:
                _wait_for(lambda: query(
                    db_conn, "select 1 from pg_locks where relation = "
                             "'raw_hubspot.deals'::regclass and not granted"),
                    "the scan's load to wait for the table", timeout=90)
                dead_scan = query(db_conn, "select scan_id from loader.scan_jobs "
                                           "where organization_id = %s", (tenant,))[0][0]
                # The other tables' jobs are not held back: let the pipelines' land first (both
                # tables: dlt loads a root table's and its child table's jobs side by side),
                # the deals' stage history (a root table of its own, without a unique key) and
                # dlt's state row (an insert_values job, not csv as the data tables' are).
                _wait_for(lambda: _completed_jobs(loader_home, tenant, "pipelines.")
                          and _completed_jobs(loader_home, tenant, "pipelines__stages.")
                          and _completed_jobs(loader_home, tenant, "deals_stage_history.")
                          and _completed_jobs(loader_home, tenant, "_dlt_pipeline_state."),
                          "the pipelines', the history's and the state's load jobs to complete",
                          timeout=60)
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                _finish(proc)
        finally:
            blocker.rollback()
            blocker.close()
        # The killed loader's server session was queued behind the lock, not reading its socket:
        # it notices its client is gone only now, and must end (releasing whatever it holds)
        # before the next run, as it would on its own in production within moments.
        _wait_for(lambda: not query(
            db_conn, "select 1 from pg_stat_activity where datname = current_database() and "
                     "pid <> pg_backend_pid() and backend_type = 'client backend' and "
                     "state <> 'idle'"),
            "the killed loader's database session to end", timeout=60)
        assert _raw_count(db_conn, dead_scan) == 0  # nothing of its deals was committed
        # dlt commits each job file in a transaction of its own, then moves the file from
        # started_jobs to completed_jobs. Put the committed jobs back, as a loader killed between
        # the two leaves them (a window this test hit only by chance, first with the pipelines'
        # jobs, then with the state's): loading them again would break the _dlt_id key on every
        # retry, or, in the stage history, which has no such key, land its rows twice.
        committed = _completed_jobs(loader_home, tenant, "")
        for job in committed:
            job.rename(job.parent.parent / "started_jobs" / job.name)
        tables = {job.name.split(".")[0] for job in committed}
        assert {"pipelines", "pipelines__stages", "deals_stage_history",
                "_dlt_pipeline_state"} <= tables
        assert "deals" not in tables
        history_rows = query(db_conn, "select count(*) from raw_hubspot.deals_stage_history "
                                      "where _dlt_load_id in (select distinct _dlt_load_id from "
                                      "raw_hubspot.pipelines where _scan_id = %s)",
                             (dead_scan,))[0][0]
        assert history_rows > 0
        pipelines_rows = query(db_conn, "select count(*) from raw_hubspot.pipelines "
                                        "where _scan_id = %s", (dead_scan,))[0][0]
        state_rows = _state_rows(db_conn, tenant)
        assert pipelines_rows > 0 and state_rows
        rerun = run_loader("run", "--tenant", tenant, "--no-transform", "--json", env=env)
        assert rerun.returncode == 0, rerun.stderr

    dead = _job(db_conn, dead_scan)
    assert dead["status"] == "failed" and dead["error_message"].startswith("interrupted")
    (result,) = _json_result(rerun.stdout)
    new_job = _job(db_conn, result["scan_id"])
    assert new_job["config"]["resumed_after"] == [dead_scan]
    assert new_job["config"]["finished_pending_loads"]  # the dead scan's package
    # The dead scan's rows landed once each, with its cursor: the new scan is incremental.
    rows, distinct = query(db_conn, "select count(*), count(distinct id) from raw_hubspot.deals "
                                    "where _scan_id = %s", (dead_scan,))[0]
    archived = query(db_conn, "select count(*) from raw_hubspot.deals where _scan_id = %s "
                              "and archived", (dead_scan,))[0][0]
    assert rows == distinct == served + archived
    assert result["mode"] == "incremental" and result["processed_items"] < served
    # The pipelines and the state row the dead loader had committed were not loaded a second
    # time (the state: its rows then, then the new scan's own).
    assert query(db_conn, "select count(*) from raw_hubspot.pipelines where _scan_id = %s",
                 (dead_scan,))[0][0] == pipelines_rows
    # So was its stage history, and each entry points at one of its deal versions.
    history = query(db_conn, "select count(*), count(distinct h._dlt_id), count(d._dlt_id) "
                             "from raw_hubspot.deals_stage_history as h "
                             "left join raw_hubspot.deals as d on d._dlt_id = h._dlt_parent_id "
                             "where h._dlt_load_id in (select distinct _dlt_load_id from "
                             "raw_hubspot.pipelines where _scan_id = %s)", (dead_scan,))[0]
    assert history == (history_rows, history_rows, history_rows)
    after = _state_rows(db_conn, tenant)
    assert after[:len(state_rows)] == state_rows and len(after) >= len(state_rows)


# --- many tenants --------------------------------------------------------------------------------


def test_run_all_with_concurrency_matches_sequential_runs_row_for_row(
    run_loader, db_conn, tmp_path: Path
) -> None:
    portals = {f"p{i}": f"tok-many-{i}-0123456789abcdef" for i in range(5)}
    parallel = {unique_tenant(f"par{i}"): tok for i, tok in enumerate(portals.values())}
    sequential = {unique_tenant(f"seq{i}"): tok for i, tok in enumerate(portals.values())}
    par_env = write_tenants_file(tmp_path / "parallel.toml", parallel)
    seq_env = write_tenants_file(tmp_path / "sequential.toml", sequential)
    with SandboxServer(portals=portals, deals=60, seed=37,
                       deals_per_portal={"p1": 30, "p3": 90}) as sandbox:
        for env in (par_env, seq_env):
            env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        many = run_loader("run", "--all", "--concurrency", "3", "--batch-size", "25",
                          "--no-transform", "--progress", "always", env=par_env)
        assert many.returncode == 0, many.stderr
        one_by_one = run_loader("run", "--all", "--batch-size", "25", "--no-transform",
                                "--json", env=seq_env)
        assert one_by_one.returncode == 0, one_by_one.stderr

    with db_conn.cursor() as cur:
        cur.execute("select organization_id, scan_id, status, processed_items "
                    "from loader.scan_jobs where organization_id = any(%s)", (list(parallel),))
        par_results = {t: {"scan_id": s, "status": st, "processed_items": n}
                       for t, s, st, n in cur.fetchall()}
    assert set(par_results) == set(parallel)  # one job per tenant
    assert all(r["status"] == "completed" for r in par_results.values())
    # The summary table lists every tenant; the progress board drew a bar for each.
    for tenant, result in par_results.items():
        assert result["scan_id"] in many.stdout
        assert f"{tenant}: " in many.stderr
    content = (
        f"select {RAW_CONTENT}, _tenant_id, _scan_id from raw_hubspot.deals "
        "where _tenant_id = %s order by id"
    )
    for (par, _), (seq, _) in zip(parallel.items(), sequential.items(), strict=True):
        par_rows, seq_rows = query(db_conn, content, (par,)), query(db_conn, content, (seq,))
        assert [r[:-2] for r in par_rows] == [r[:-2] for r in seq_rows], (par, seq)
        assert par_rows, par
        # Every row carries its own tenant and the scan that tenant ran: nothing mixed.
        assert {r[-2:] for r in par_rows} == {(par, par_results[par]["scan_id"])}
        assert par_results[par]["processed_items"] == len(par_rows)
        history = (
            "select d.id, h.value, h.changed_at from raw_hubspot.deals_stage_history as h "
            "join raw_hubspot.deals as d on d._dlt_id = h._dlt_root_id "
            "where d._tenant_id = %s order by 1, 3, 2"
        )
        assert query(db_conn, history, (par,)) == query(db_conn, history, (seq,))


# --- ids ------------------------------------------------------------------------------------------

BAD_TENANT = "org'; drop table deals; --"


@pytest.mark.embedded_only
@pytest.mark.parametrize("args", [
    ("run", "--tenant", BAD_TENANT),
    ("scans", "--tenant", BAD_TENANT),
    ("status", BAD_TENANT),
    ("cancel", BAD_TENANT),
    ("deals", "--tenant", BAD_TENANT),
    ("deals", "--tenant", "acme", "--scan", BAD_TENANT),
])
def test_bad_ids_are_refused_before_touching_the_database(
    run_loader, tmp_path: Path, args: tuple[str, ...]
) -> None:
    # A database that cannot be reached: an id error, not a connection error, proves the id was
    # refused first.
    result = run_loader(*args, env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:9/nowhere",
                                    "HUBSPOT_ACCESS_TOKEN": "tok-unused"})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: invalid ") and " id " in lines[0]
    assert "connect" not in lines[0]


@pytest.mark.embedded_only
def test_bad_tenant_in_the_tenants_file_is_refused_before_touching_the_database(
    run_loader, tmp_path: Path
) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text(f'[[tenants]]\nid = "{BAD_TENANT}"\ntoken_env = "X"\n')
    result = run_loader("run", "--all", env={
        "LOADER_TENANTS_FILE": str(path),
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/nowhere"})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid tenant id" in lines[0], result.stderr

