"""The loader's own figures: full and incremental scans, rate-limit utilisation, dbt builds, and
peak memory — every one a ``python -m loader ...`` subprocess, as a user runs it."""

from __future__ import annotations

import bisect
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from .harness import MB, BenchEnv, BenchError, ProcRun, Sandbox


def _scan_results(run: ProcRun, what: str) -> list[dict[str, Any]]:
    run.check(what)
    try:
        results = run.json()
    except ValueError:
        raise BenchError(
            f"{what}: the loader's --json output is not JSON: {run.stdout[:300]}") from None
    if isinstance(results, dict):
        results = results.get("results") or [results]
    bad = [r for r in results if r.get("status") != "completed"]
    if bad:
        raise BenchError(f"{what}: scans not completed: "
                         + "; ".join(f"{r.get('tenant_id')}: {r.get('status')} "
                                     f"{r.get('error_message') or ''}" for r in bad))
    return results


def _landed(env: BenchEnv, results: list[dict[str, Any]]) -> int:
    """Deal rows the scans in ``results`` landed in raw_hubspot.deals."""
    scan_ids = [r["scan_id"] for r in results if r.get("scan_id")]
    with env.cursor() as cur:
        cur.execute("select count(*) from raw_hubspot.deals where _scan_id = any(%s)", (scan_ids,))
        return int(cur.fetchone()[0])


def _queued_to_done(env: BenchEnv, results: list[dict[str, Any]]) -> float | None:
    """Seconds from the first of the scans' jobs being queued to the last one ending, from
    ``loader.scan_jobs``: the worker's part of a ``submit --wait`` (without the command's own
    start-up and exit)."""
    job_ids = [r["job_id"] for r in results if r.get("job_id")]
    with env.cursor() as cur:
        cur.execute("select extract(epoch from max(completed_at) - min(created_at)) "
                    "from loader.scan_jobs where id = any(%s)", (job_ids,))
        seconds = cur.fetchone()[0]
    return None if seconds is None else round(float(seconds), 3)


def scan(env: BenchEnv, sandbox: Sandbox, group: str, tenants: list[str], *, what: str,
         full_refresh: bool = False, timeout: float | None = None, concurrency: int = 0,
         options: tuple[str, ...] = ()) -> dict[str, Any]:
    """``python -m loader run --all --concurrency C --no-transform --json [OPTIONS]`` over
    ``tenants``."""
    tenv = env.tenants_env(group, tenants, sandbox.base_url)
    args = ["run", "--all", "--concurrency", str(concurrency or len(tenants)), "--no-transform",
            "--json", *options]
    if full_refresh:
        args.append("--full-refresh")
    sandbox.clear_cache()
    before = sandbox.requests_total(tenants)
    pages_before = sandbox.cache_counters()
    run = env.loader(args, tenv, timeout=timeout)
    results = _scan_results(run, what)
    requests_made = sandbox.requests_total(tenants) - before
    deals = _landed(env, results)
    return {
        "deals": deals,
        "requests": requests_made,
        "seconds": round(run.seconds, 3),
        "deals_per_s": round(deals / run.seconds, 1) if run.seconds else None,
        "modes": sorted({str(r.get("mode")) for r in results}),
        "tenants": len(tenants),
        "cpu_seconds": round(run.cpu_seconds, 2),
        "peak_rss_process_mb": round(run.peak_rss_process / MB, 1),
        "peak_rss_tree_mb": round(run.peak_rss_tree / MB, 1),
        **pages_since(sandbox, pages_before),
    }


def pages_since(sandbox: Sandbox, before: tuple[int, int]) -> dict[str, int]:
    """Pages the sandbox served from its cache vs rendered since its ``cache_counters()`` were
    ``before`` (rendering costs its CPU too; a measured scan starts with the cache cleared)."""
    hits, misses = sandbox.cache_counters()
    return {"sandbox_cached_pages": hits - before[0],
            "sandbox_rendered_pages": misses - before[1]}


def median_of(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every number the samples share (the first sample's other values), with
    ``seconds_min`` / ``seconds_max``, how many samples, and the samples themselves."""
    out: dict[str, Any] = dict(samples[0])
    for key, value in samples[0].items():
        values = [x.get(key) for x in samples]
        if isinstance(value, int | float) and not isinstance(value, bool) and all(
                isinstance(v, int | float) for v in values):
            median = statistics.median(values)
            out[key] = round(median, 3) if isinstance(median, float) else median
    seconds = [x["seconds"] for x in samples if isinstance(x.get("seconds"), int | float)]
    if seconds:
        out["seconds_min"], out["seconds_max"] = min(seconds), max(seconds)
    out["samples"] = len(samples)
    out["rounds"] = samples
    return out


def warm_up(env: BenchEnv, sandbox: Sandbox, tenant: str) -> None:
    """A tiny first scan, so the raw tables exist as after any first scan (``run_many`` runs the
    first tenant alone while they do not)."""
    tenv = env.tenants_env("warmup", [tenant], sandbox.base_url)
    _scan_results(env.loader(["run", "--tenant", tenant, "--no-transform", "--json"], tenv),
                  "warm-up scan")


def change_deals(env: BenchEnv, sandbox: Sandbox, tenants: list[str], fraction: float
                 ) -> int:
    """Change ``fraction`` of each tenant's live deals in the sandbox (spread evenly over the id
    range): half get a new next step and amount, half move to another stage of the default
    pipeline (from the stage their latest landed version has: a move every time, so each round
    fetches their stage history as a real stage change does). Returns how many changed."""
    step = max(1, round(1 / fraction))
    work: list[tuple[str, str, dict[str, str]]] = []
    with env.cursor() as cur:
        for tenant in tenants:
            cur.execute("select distinct on (id) id, properties->>'pipeline', "
                        "properties->>'dealstage' from raw_hubspot.deals "
                        "where _tenant_id = %s and not archived "
                        "order by id, _extracted_at desc", (tenant,))
            rows = cur.fetchall()[::step]
            for n, (deal_id, pipeline, stage) in enumerate(rows):
                moved = ("decisionmakerboughtin"
                         if (pipeline, stage) == ("default", "contractsent") else "contractsent")
                props = ({"hs_next_step": f"bench follow-up {n}", "amount": str(1000 + n)}
                         if n % 2 == 0 else {"pipeline": "default", "dealstage": moved})
                work.append((tenant, deal_id, props))
    local = threading.local()

    def patch(item: tuple[str, str, dict[str, str]]) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        tenant, deal_id, props = item
        response = session.patch(f"{sandbox.base_url}/_sandbox/portals/{tenant}/deals/{deal_id}",
                                 json={"properties": props}, timeout=60)
        if response.status_code >= 400:
            raise BenchError(f"sandbox PATCH {tenant}/{deal_id}: {response.status_code} "
                             f"{response.text[:200]}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(patch, work))
    return len(work)


def dbt_build(env: BenchEnv, *, full_refresh: bool, timeout: float | None = None
              ) -> dict[str, Any]:
    """``python -m loader transform [--full-refresh]`` (dbt build: models and their tests)."""
    args = ["transform", *(["--full-refresh"] if full_refresh else [])]
    run = env.loader(args, env.env(), timeout=timeout)
    out: dict[str, Any] = {"seconds": round(run.seconds, 3), "ok": run.returncode == 0}
    if run.returncode != 0:
        out["error"] = "\n".join((run.stdout + run.stderr).strip().splitlines()[-8:])
    with env.cursor() as cur:
        cur.execute("select to_regclass('analytics.deals') is not null")
        if cur.fetchone()[0]:
            cur.execute("select count(*) from analytics.deals")
            out["analytics_deals"] = int(cur.fetchone()[0])
    return out


def rate_limit(env: BenchEnv, sandbox: Sandbox, tenant: str, *, tier: str, time_scale: float,
               poll: float = 0.02) -> dict[str, Any]:
    """A scan of one tenant against the throttled sandbox, its requests counted per window by
    polling the sandbox's own counters."""
    from loader.sandbox.ratelimit import TEN_SECONDLY_WINDOW_S, TIERS

    limit = TIERS[tier].ten_secondly
    window = TEN_SECONDLY_WINDOW_S * time_scale
    sandbox.set_rate_limit(tenant, tier, time_scale)
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def poller() -> None:
        session = requests.Session()
        url = f"{sandbox.base_url}/_sandbox/portals/{tenant}/stats"
        while not stop.is_set():
            stats = session.get(url, timeout=30).json()
            samples.append((time.perf_counter(), stats["requests_total"] - stats["count_429"],
                            stats["count_429"]))
            time.sleep(poll)

    thread = threading.Thread(target=poller, daemon=True)
    thread.start()
    tenv = env.tenants_env("ratelimit", [tenant], sandbox.base_url)
    try:
        run = env.loader(["run", "--tenant", tenant, "--no-transform", "--json"], tenv)
    finally:
        stop.set()
        thread.join()
    _scan_results(run, "rate-limited scan")
    windows, throttled = _per_window(samples, window)
    if not windows and len(samples) > 1:
        # The scan was shorter than one window: its average rate, per window.
        span = max(samples[-1][0] - samples[0][0], 1e-9)
        windows = [round((samples[-1][1] - samples[0][1]) * window / span)]
        throttled = [samples[-1][2] - samples[0][2]]
    steady = windows[1:] if len(windows) > 2 else windows
    steady_429 = throttled[1:] if len(throttled) > 2 else throttled
    used = statistics.mean(steady) if steady else 0.0
    return {
        "tier": tier,
        "time_scale": time_scale,
        "window_seconds": window,
        "allowed_per_window": limit,
        "used_per_window": round(used, 1),
        "used_per_window_min": min(steady) if steady else 0,
        "utilisation": round(used / limit, 4),
        "windows_measured": len(steady),
        "count_429_steady": sum(steady_429),
        "count_429_total": samples[-1][2] - samples[0][2] if samples else 0,
        "requests": samples[-1][1] - samples[0][1] if samples else 0,
        "seconds": round(run.seconds, 3),
    }


def _per_window(samples: list[tuple[float, int, int]], window: float
                ) -> tuple[list[int], list[int]]:
    """Requests (not 429) and 429s in consecutive windows from the first request to the last."""
    if len(samples) < 2:
        return [], []
    times = [s[0] for s in samples]
    base_ok, final_ok = samples[0][1], samples[-1][1]
    start = next((s[0] for s in samples if s[1] > base_ok), None)
    end = next((s[0] for s in samples if s[1] == final_ok), None)
    if start is None or end is None:
        return [], []

    def at(t: float, column: int) -> int:
        return samples[max(0, bisect.bisect_right(times, t) - 1)][column]

    used, throttled = [], []
    k = 0
    while start + (k + 1) * window <= end:
        a, b = start + k * window, start + (k + 1) * window
        used.append(at(b, 1) - at(a, 1))
        throttled.append(at(b, 2) - at(a, 2))
        k += 1
    return used, throttled


class WorkerRun:
    """``python -m loader worker --json`` for the bench's tenants, driven as an operator drives
    it: ``submit --all --wait`` for scans, ``transform --on-worker`` for a requested build, and
    the builds it runs by itself after scans, read from ``loader.dbt_builds``."""

    def __init__(self, env: BenchEnv, sandbox: Sandbox, tenants: list[str], concurrency: int,
                 *, timeout: float = 1200) -> None:
        import subprocess
        import sys

        self.env, self.sandbox, self.tenants, self.timeout = env, sandbox, tenants, timeout
        self.tenv = env.tenants_env("worker", tenants, sandbox.base_url)
        self._log = open(env.home / "worker.log", "w+b")  # noqa: SIM115 - closed in stop()
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loader", "worker", "--concurrency", str(concurrency),
             "--json"], env=self.tenv, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.events: list[dict[str, Any]] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout=300) or self.proc.poll() is not None:
            self.stop()
            raise BenchError(f"the worker did not start: {self._log_tail()}")
        self.ready_seconds = round(time.perf_counter() - started, 3)
        self.dbt_parse_seconds = self.events[0].get("dbt_parse_seconds")

    def _read(self) -> None:
        import json

        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            if event.get("event") == "ready":
                self._ready.set()

    def _log_tail(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-800:]

    def cpu_seconds(self) -> float:
        """User + system CPU of the worker and every process under it, so far."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            members = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0.0
        for member in members:
            try:
                times = member.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def submit(self, *, full_refresh: bool = False, options: tuple[str, ...] = ()
               ) -> dict[str, Any]:
        """``submit --all --wait [OPTIONS]`` timed from the command's start to its exit (every
        scan ended), as an operator waits for it; requests from the sandbox's counters."""
        args = ["submit", "--all", "--wait", "--json",
                *(["--full-refresh"] if full_refresh else []), *options]
        self.sandbox.clear_cache()
        before = self.sandbox.requests_total(self.tenants)
        pages_before = self.sandbox.cache_counters()
        cpu = self.cpu_seconds()
        run = self.env.loader(args, self.tenv, timeout=self.timeout)
        results = _scan_results(run, "worker scans")
        deals = _landed(self.env, results)
        return {
            "deals": deals,
            "requests": self.sandbox.requests_total(self.tenants) - before,
            "seconds": round(run.seconds, 3),
            "queued_to_done_seconds": _queued_to_done(self.env, results),
            "deals_per_s": round(deals / run.seconds, 1) if run.seconds else None,
            "modes": sorted({str(r.get("mode")) for r in results}),
            "worker_cpu_seconds": round(self.cpu_seconds() - cpu, 2),
            **pages_since(self.sandbox, pages_before),
        }

    def next_build(self, after: str | None = None) -> dict[str, Any]:
        """The first build the worker ran by itself after ``after`` (an earlier build's id, or
        None: any), once it has ended."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            builds = [e for e in self.events if e.get("event") == "build"]
            ids = [e.get("build_id") for e in builds]
            start = ids.index(after) + 1 if after in ids else (len(ids) if after else 0)
            for event in builds[start:]:
                if event.get("requested_by") == "worker":
                    return {**self._build_record(event), "slowest": event.get("slowest")}
            if self.proc.poll() is not None:
                raise BenchError(f"the worker stopped: {self._log_tail()}")
            time.sleep(0.05)
        raise BenchError("timed out waiting for the worker's dbt build")

    def transform(self, *, full_refresh: bool) -> dict[str, Any]:
        """``transform --on-worker`` (a build the worker runs with its dbt project parsed)."""
        import json

        run = self.env.loader(["transform", "--on-worker", "--json",
                               *(["--full-refresh"] if full_refresh else [])], self.tenv,
                              timeout=self.timeout).check("transform --on-worker")
        record = json.loads(run.stdout)
        return {**self._build_record(record), "command_seconds": round(run.seconds, 3)}

    def _build_record(self, event: dict[str, Any]) -> dict[str, Any]:
        build_id = event.get("build_id") or event.get("id")
        with self.env.cursor() as cur:
            cur.execute("select status, full_refresh, requested_by, nodes, views_skipped, "
                        "seconds from loader.dbt_builds where id = %s", (build_id,))
            row = cur.fetchone()
        if row is None or row[0] != "completed":
            raise BenchError(f"worker dbt build {build_id} did not complete: {row}")
        return {"build_id": build_id, "full_refresh": row[1], "requested_by": row[2],
                "nodes": row[3], "views_skipped": row[4], "seconds": float(row[5])}

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except Exception:  # noqa: BLE001 - never leave it running
                self.proc.kill()
                self.proc.wait()
        self._log.close()
