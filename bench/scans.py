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


def scan(env: BenchEnv, sandbox: Sandbox, group: str, tenants: list[str], *, what: str,
         full_refresh: bool = False, timeout: float | None = None, concurrency: int = 0
         ) -> dict[str, Any]:
    """``python -m loader run --all --concurrency C --no-transform --json`` over ``tenants``."""
    tenv = env.tenants_env(group, tenants, sandbox.base_url)
    args = ["run", "--all", "--concurrency", str(concurrency or len(tenants)), "--no-transform",
            "--json"]
    if full_refresh:
        args.append("--full-refresh")
    before = sandbox.requests_total(tenants)
    hits, misses = sandbox.cache_counters()
    run = env.loader(args, tenv, timeout=timeout)
    results = _scan_results(run, what)
    requests_made = sandbox.requests_total(tenants) - before
    hits_after, misses_after = sandbox.cache_counters()
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
        # Pages the sandbox served from its cache vs rendered (rendering costs its CPU too).
        "sandbox_cached_pages": hits_after - hits,
        "sandbox_rendered_pages": misses_after - misses,
    }


def warm_up(env: BenchEnv, sandbox: Sandbox, tenant: str) -> None:
    """A tiny first scan, so the raw tables exist as after any first scan (``run_many`` runs the
    first tenant alone while they do not)."""
    tenv = env.tenants_env("warmup", [tenant], sandbox.base_url)
    _scan_results(env.loader(["run", "--tenant", tenant, "--no-transform", "--json"], tenv),
                  "warm-up scan")


def change_deals(env: BenchEnv, sandbox: Sandbox, tenants: list[str], fraction: float
                 ) -> int:
    """Change ``fraction`` of each tenant's live deals in the sandbox (spread evenly over the id
    range): half get a new next step and amount, half move stage. Returns how many changed."""
    step = max(1, round(1 / fraction))
    work: list[tuple[str, str, dict[str, str]]] = []
    with env.cursor() as cur:
        for tenant in tenants:
            cur.execute("select distinct id from raw_hubspot.deals "
                        "where _tenant_id = %s and not archived order by id", (tenant,))
            ids = [r[0] for r in cur.fetchall()][::step]
            for n, deal_id in enumerate(ids):
                props = ({"hs_next_step": f"bench follow-up {n}", "amount": str(1000 + n)}
                         if n % 2 == 0 else {"pipeline": "default", "dealstage": "contractsent"})
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
