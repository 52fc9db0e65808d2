"""``submit`` and ``worker`` end to end: the queue in loader.scan_jobs, scans in the worker's
processes, its dbt build, cancel while queued, a tenant busy elsewhere, --every, SIGTERM.

Real sandbox HubSpot on loopback, real PostgreSQL, the loader as subprocesses. Each worker here
ends before its test does (``--once``, or a signal), so no worker takes another test's scans.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from loader.sandbox import SandboxServer
from tests.conftest import query, unique_tenant, write_tenants_file
from tests.loader.test_scan_control import (
    BATCH,
    _finish,
    _job,
    _popen_loader,
    _raw_count,
    _running_job,
    _slow,
    _wait_for,
)


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _jobs(db_conn, tenants: list[str]) -> list[dict[str, Any]]:
    rows = query(db_conn, "select scan_id from loader.scan_jobs where organization_id = any(%s) "
                          "order by organization_id, created_at", (tenants,))
    return [_job(db_conn, r[0]) for r in rows]


class _Worker:
    """A long-running ``worker --json`` whose events are read as they come."""

    def __init__(self, tmp_path: Path, env: dict[str, str], *args: str) -> None:
        self.proc = _popen_loader(tmp_path, env, "worker", "--json", *args)
        self.events: list[dict[str, Any]] = []

    def wait_for(self, event: str, count: int = 1, timeout: float = 180) -> dict[str, Any]:
        def seen() -> Any:
            self.proc.out_file.seek(0)  # type: ignore[attr-defined]
            self.events = _events(self.proc.out_file.read())  # type: ignore[attr-defined]
            matching = [e for e in self.events if e["event"] == event]
            return matching[count - 1] if len(matching) >= count else None
        return _wait_for(seen, f"worker event {event} #{count}", timeout)

    def stop(self) -> tuple[int, list[dict[str, Any]], str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code, out, err = _finish(self.proc)
        return code, _events(out), err


def test_submitted_scans_run_on_the_worker_and_build_the_warehouse(
    run_loader, db_conn, tmp_path: Path
) -> None:
    a, b = unique_tenant("qa"), unique_tenant("qb")
    tokens = {a: "tok-queue-a-0123456789", b: "tok-queue-b-0123456789"}
    env = write_tenants_file(tmp_path / "tenants.toml", tokens)
    with SandboxServer(portals=tokens, deals=300, seed=41) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        first = run_loader("submit", "--all", env=env)
        again = run_loader("submit", "--tenant", a, "--full-refresh", "--json", env=env)
        queued = _jobs(db_conn, [a, b])
        listed = run_loader("scans", "--active", "--tenant", a, "--json", env=env)
        worker = run_loader("worker", "--once", "--json", "--concurrency", "2", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stderr.strip() == (
        "warning: no worker is running on this database; the scans stay queued until one "
        "starts: python -m loader worker")
    assert [j["status"] for j in queued] == ["pending", "pending"]
    assert {j["scan_type"] for j in queued} == {"deals_queued"}
    assert first.stdout.splitlines() == [f"queued: scan {j['scan_id']} for tenant "
                                         f"{j['organization_id']}" for j in queued]
    # Submitting a queued tenant again returns its queued scan, made a full refresh.
    (repeat,) = json.loads(again.stdout)
    assert repeat["queued"] is False and repeat["scan_id"] == queued[0]["scan_id"]
    assert queued[0]["config"]["full_refresh"] is True
    assert queued[1]["config"]["full_refresh"] is False
    (shown,) = json.loads(listed.stdout)
    assert shown["loader_alive"] is None  # queued: no loader has it yet (not "interrupted")

    assert worker.returncode == 0, worker.stderr
    events = _events(worker.stdout)
    assert [e["event"] for e in events][0] == "ready"
    scans = {e["scan_id"]: e for e in events if e["event"] == "scan"}
    assert set(scans) == {j["scan_id"] for j in queued}
    assert {e["status"] for e in scans.values()} == {"completed"}
    assert {e["mode"] for e in scans.values()} == {"full"}
    (build,) = [e for e in events if e["event"] == "build"]
    assert build["ok"] is True and build["error"] is None
    assert events[-1]["event"] == "stopped"
    assert [e["event"] for e in events].index("build") > max(
        i for i, e in enumerate(events) if e["event"] == "scan")
    for job in _jobs(db_conn, [a, b]):
        assert job["status"] == "completed" and job["scan_type"] == "deals_full"
        assert job["processed_items"] == _raw_count(db_conn, job["scan_id"]) > 0
        assert job["config"]["queued"] is True and job["config"]["mode"] == "full"
        assert not any(t in json.dumps(job["config"]) for t in tokens.values())
    counts = dict(query(db_conn, "select _tenant_id, count(*) from analytics.deals "
                                 "where _tenant_id = any(%s) group by 1", ([a, b],)))
    assert counts[a] == scans[queued[0]["scan_id"]]["processed_items"] > 0
    assert set(counts) == {a, b}


def test_submit_wait_returns_the_worker_scans_and_sigterm_stops_an_idle_worker(
    run_loader, db_conn, tmp_path: Path
) -> None:
    tenant = unique_tenant("qwait")
    tokens = {tenant: "tok-queue-wait-0123456789"}
    env = write_tenants_file(tmp_path / "tenants.toml", tokens)
    with SandboxServer(portals=tokens, deals=400, seed=43) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        worker = _Worker(tmp_path, env, "--no-transform")
        try:
            worker.wait_for("ready")
            full = run_loader("submit", "--tenant", tenant, "--wait", "--json", env=env)
            portal = sandbox.portal(tenant)
            changed = portal.deal_ids()[:7]
            for deal_id in changed:
                portal.update_deal(deal_id, {"hs_next_step": "call back"})
            incremental = run_loader("submit", "--tenant", tenant, "--wait", env=env)
            worker.wait_for("scan", count=2)
        finally:
            code, events, err = worker.stop()
    assert full.returncode == 0, full.stderr
    assert full.stderr == ""  # a worker is running: no warning
    (result,) = json.loads(full.stdout)
    assert result["status"] == "completed" and result["mode"] == "full"
    assert result["processed_items"] == _raw_count(db_conn, result["scan_id"]) > 0
    assert incremental.returncode == 0, incremental.stderr
    assert "scan summary" in incremental.stdout and "incremental" in incremental.stdout
    (latest,) = query(db_conn, "select scan_id, processed_items from loader.scan_jobs where "
                               "organization_id = %s order by created_at desc limit 1",
                      (tenant,))
    ids = {r[0] for r in query(db_conn, "select id from raw_hubspot.deals where _scan_id = %s",
                               (latest[0],))}
    assert set(changed) <= ids
    assert code == 0, err
    assert [e["event"] for e in events][-1] == "stopped"
    assert not [e for e in events if e["event"] == "build"]  # --no-transform


def test_a_scan_cancelled_while_queued_never_starts(run_loader, db_conn, tmp_path: Path) -> None:
    tenant = unique_tenant("qcancel")
    tokens = {tenant: "tok-queue-cancel-0123456789"}
    env = write_tenants_file(tmp_path / "tenants.toml", tokens)
    with SandboxServer(portals=tokens, deals=100, seed=47) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        submitted = run_loader("submit", "--tenant", tenant, "--json", env=env)
        (queued,) = json.loads(submitted.stdout)
        cancel = run_loader("cancel", queued["scan_id"], env=env)
        worker = run_loader("worker", "--once", "--no-transform", "--json", env=env)
        requests = sandbox.portal(tenant).stats()["requests_total"]
    assert cancel.returncode == 0, cancel.stderr
    assert worker.returncode == 0, worker.stderr
    assert not [e for e in _events(worker.stdout) if e["event"] in ("started", "scan")]
    job = _job(db_conn, queued["scan_id"])
    assert job["status"] == "cancelled" and job["scan_type"] == "deals_queued"
    assert job["started_at"] is not None  # the trigger stamps a cancelled job's times
    assert requests == 0


def test_a_tenant_scanned_elsewhere_stays_queued_until_its_scan_ends(
    run_loader, db_conn, tmp_path: Path
) -> None:
    tenant = unique_tenant("qbusy")
    tokens = {tenant: "tok-queue-busy-0123456789"}
    env = write_tenants_file(tmp_path / "tenants.toml", tokens)
    with SandboxServer(portals=tokens, deals=1000, seed=53) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        portal = sandbox.portal(tenant)
        _slow(portal, 0.3)
        run = _popen_loader(tmp_path, env, "run", "--tenant", tenant, "--batch-size",
                            str(BATCH), "--no-transform")
        try:
            scan_id, _ = _wait_for(_running_job(db_conn, tenant), "the CLI scan to run")
            submitted = run_loader("submit", "--tenant", tenant, "--json", env=env)
            worker = _Worker(tmp_path, env, "--once", "--no-transform")
            busy = worker.wait_for("busy")
            still_queued = _job(db_conn, json.loads(submitted.stdout)[0]["scan_id"])["status"]
            portal.clear_faults()
            run_code, _, _ = _finish(run)
            worker_code, events, err = _finish_worker(worker)
        finally:
            if run.poll() is None:
                run.kill()
    assert run_code == 0
    assert still_queued == "pending"
    assert busy["tenant_id"] == tenant and scan_id in busy["reason"]
    assert worker_code == 0, err
    (scan,) = [e for e in events if e["event"] == "scan"]
    queued = _job(db_conn, json.loads(submitted.stdout)[0]["scan_id"])
    assert scan["status"] == "completed" and queued["status"] == "completed"
    assert queued["started_at"] >= _job(db_conn, scan_id)["completed_at"]
    assert scan["mode"] == "incremental"


def test_a_queued_scan_that_cannot_start_fails_with_the_reason(
    run_loader, db_conn, tmp_path: Path
) -> None:
    tenant = unique_tenant("qtoken")
    env = write_tenants_file(tmp_path / "tenants.toml", {})
    env["HUBSPOT_ACCESS_TOKEN"] = ""
    submitted = run_loader("submit", "--tenant", tenant, "--json", env=env)
    worker = run_loader("worker", "--once", "--no-transform", "--json", env=env)
    (queued,) = json.loads(submitted.stdout)
    assert worker.returncode == 0, worker.stderr
    (scan,) = [e for e in _events(worker.stdout) if e["event"] == "scan"]
    job = _job(db_conn, queued["scan_id"])
    assert job["status"] == "failed" == scan["status"]
    assert job["error_message"] == (
        f"no HubSpot token for tenant {tenant!r}: set HUBSPOT_ACCESS_TOKEN")


def test_every_queues_a_scan_of_each_tenant(run_loader, db_conn, tmp_path: Path) -> None:
    a, b = unique_tenant("qevery"), unique_tenant("qevery")
    tokens = {a: "tok-every-a-0123456789", b: "tok-every-b-0123456789"}
    env = write_tenants_file(tmp_path / "tenants.toml", tokens)
    with SandboxServer(portals=tokens, deals=80, seed=59) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        worker = run_loader("worker", "--once", "--every", "600", "--no-transform", "--json",
                            env=env)
    assert worker.returncode == 0, worker.stderr
    events = _events(worker.stdout)
    (round_,) = [e for e in events if e["event"] == "round"]
    assert len(round_["queued"]) == 2
    assert {e["tenant_id"] for e in events if e["event"] == "scan"} == {a, b}
    assert [j["status"] for j in _jobs(db_conn, [a, b])] == ["completed", "completed"]


def test_sigterm_twice_cancels_the_running_scans_within_a_batch(
    run_loader, db_conn, tmp_path: Path
) -> None:
    tenant = unique_tenant("qterm")
    tokens = {tenant: "tok-queue-term-0123456789"}
    env = write_tenants_file(tmp_path / "tenants.toml", tokens)
    with SandboxServer(portals=tokens, deals=2000, seed=61) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        _slow(sandbox.portal(tenant), 0.3)
        submitted = run_loader("submit", "--tenant", tenant, "--batch-size", str(BATCH),
                               "--json", env=env)
        worker = _Worker(tmp_path, env, "--no-transform")
        try:
            _wait_for(_running_job(db_conn, tenant, at_least=BATCH), "the queued scan to run")
            worker.proc.send_signal(signal.SIGTERM)
            _wait_for(lambda: "stopping after the running scans" in _stderr(worker),
                      "the worker to acknowledge the first signal")
            worker.proc.send_signal(signal.SIGTERM)
        finally:
            code, events, err = worker.stop()
    assert code == 0, err
    (scan,) = [e for e in events if e["event"] == "scan"]
    job = _job(db_conn, json.loads(submitted.stdout)[0]["scan_id"])
    assert scan["status"] == job["status"] == "cancelled"
    assert job["processed_items"] == _raw_count(db_conn, job["scan_id"]) < 2000


def _finish_worker(worker: _Worker) -> tuple[int, list[dict[str, Any]], str]:
    """Wait for a ``--once`` worker to end by itself."""
    code, out, err = _finish(worker.proc)
    return code, _events(out), err


def _stderr(worker: _Worker) -> str:
    handle = worker.proc.err_file  # type: ignore[attr-defined]
    handle.seek(0)
    return handle.read()


@pytest.mark.parametrize("args, message", [
    (["submit", "--tenant", "bad tenant"], "invalid tenant id"),
    (["submit"], "one of the arguments --tenant --all is required"),
    (["worker", "--concurrency", "0"], "must be positive: 0"),
    (["worker", "--every", "soon"], "not a number: 'soon'"),
])
def test_bad_submit_and_worker_arguments_are_one_line_errors(
    run_loader, args: list[str], message: str
) -> None:
    result = run_loader(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_submit_wait_gives_up_after_its_timeout(run_loader, db_conn, tmp_path: Path) -> None:
    tenant = unique_tenant("qtimeout")
    env = write_tenants_file(tmp_path / "tenants.toml", {tenant: "tok-timeout-0123456789"})
    result = run_loader("submit", "--tenant", tenant, "--wait", "--timeout", "0.5", env=env)
    (job,) = [_job(db_conn, r[0]) for r in query(
        db_conn, "select scan_id from loader.scan_jobs where organization_id = %s", (tenant,))]
    cancel = run_loader("cancel", job["scan_id"])  # leave no queued scan for later tests
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: timed out after 0.5 s waiting for {job['scan_id']}; they go on "
        "(see python -m loader scans)")
    assert cancel.returncode == 0


def test_transform_on_worker_runs_a_requested_build_there(
    run_loader, db_conn, tmp_path: Path
) -> None:
    tenant = unique_tenant("qbuild")
    tokens = {tenant: "tok-queue-build-0123456789"}
    env = write_tenants_file(tmp_path / "tenants.toml", tokens)
    without = run_loader("transform", "--on-worker", env=env)
    with SandboxServer(portals=tokens, deals=150, seed=67) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        worker = _Worker(tmp_path, env)
        try:
            worker.wait_for("ready")
            scanned = run_loader("submit", "--tenant", tenant, "--wait", env=env)
            after_scan = worker.wait_for("build")
            requested = run_loader("transform", "--on-worker", "--full-refresh", "--json",
                                   env=env)
            second = worker.wait_for("build", count=2)
        finally:
            code, _, err = worker.stop()
    assert without.returncode == 1
    assert without.stderr.strip() == (
        "error: no worker that runs dbt builds is running on this database; start one "
        "(python -m loader worker) or run transform without --on-worker")
    assert scanned.returncode == 0, scanned.stderr
    assert after_scan["ok"] and after_scan["requested_by"] == "worker"
    assert requested.returncode == 0, requested.stderr
    build = json.loads(requested.stdout)
    assert build["status"] == "completed" and build["full_refresh"] is True
    assert build["requested_by"] == "request" and build["id"] == second["build_id"]
    assert second["full_refresh"] is True and second["views_skipped"] is False
    rows = query(db_conn, "select requested_by, status, nodes > 0 from loader.dbt_builds "
                          "where id = any(%s) order by requested_at",
                 ([after_scan["build_id"], build["id"]],))
    assert rows == [("worker", "completed", True), ("request", "completed", True)]
    assert query(db_conn, "select count(*) from analytics.deals where _tenant_id = %s",
                 (tenant,))[0][0] > 0
    assert code == 0, err
