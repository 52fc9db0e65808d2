"""``python -m bench``: every section in one run, a rich table, and ``bench/results.json``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .harness import PROJECT_ROOT, BenchEnv, BenchError, Sandbox

DEFAULT_RESULTS = PROJECT_ROOT / "bench" / "results.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench",
                                description="The loader measured against its ceilings.")
    p.add_argument("--deals", type=int, default=200_000, help="deals in all (default 200,000)")
    p.add_argument("--tenants", type=int, default=4, help="tenants (portals) (default 4)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                   help="where to write the JSON results (default bench/results.json)")
    p.add_argument("--concurrency", type=int, default=0,
                   help="tenants scanned at once (default: min(tenants, 4))")
    p.add_argument("--naive-deals", type=int, default=0,
                   help="deals the naive reference loads, extrapolated (default min(N/T, 5000))")
    p.add_argument("--memory-factor", type=int, default=5,
                   help="peak RSS is measured for one tenant of N/T and of F×N/T deals")
    p.add_argument("--rate-limit-tier", default="pro", help="sandbox tier (default pro: 190/10 s)")
    p.add_argument("--rate-limit-seconds", type=float, default=40.0,
                   help="about how long the throttled scan should run (default 40)")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="rate-limit window scale (1.0: HubSpot's real 10 s window)")
    p.add_argument("--query-deals", type=int, default=0,
                   help="analytics.deals rows for the query section (default: --deals); rows "
                        "beyond what was scanned are generated with SQL")
    p.add_argument("--query-tenants", type=int, default=0, help="default: --tenants")
    p.add_argument("--query-repeats", type=int, default=50)
    p.add_argument("--indexed-properties", default="custom_region",
                   help="LOADER_INDEXED_PROPERTIES for the bench's builds: the custom properties "
                        "that get an index on analytics.deals (default custom_region, the one "
                        "the custom-property query reads; '' for none)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of 1%% change, incremental scan (run --all) and transform; the "
                        "figures are the rounds' medians (default 3; 2 with --quick)")
    p.add_argument("--worker-rounds", type=int, default=5,
                   help="rounds of 1%% change + incremental scans through the worker, each "
                        "with the build after it; the figures are the rounds' medians "
                        "(default 5; 2 with --quick)")
    p.add_argument("--dbt-timeout", type=float, default=1200.0,
                   help="seconds one dbt build may take before the bench gives up on it")
    p.add_argument("--only-queries", action="store_true",
                   help="only what the query section needs: the full scan, the dbt build and "
                        "the queries (the other sections are skipped)")
    p.add_argument("--quick", action="store_true",
                   help="short rate-limit and query sections (for the smoke test)")
    p.add_argument("--keep-home", action="store_true", help="keep the temporary LOADER_HOME")
    p.add_argument("--show", type=Path, metavar="RESULTS_JSON",
                   help="print the tables of an earlier run's results file; runs nothing")
    p.add_argument("--markdown", action="store_true",
                   help="print the tables as Markdown (with --show, or after a run)")
    p.add_argument("--dbt-only", action="store_true",
                   help="only what the dbt figures need: full scan, dbt full build, 1%% change, "
                        "incremental scan, dbt incremental build (no ceilings, naive reference, "
                        "rate limit, memory or queries)")
    return p


#: The sections ``--only-queries`` and ``--dbt-only`` run (each the steps its figures need).
SUBSETS: dict[str, frozenset[str]] = {
    "only_queries": frozenset({"full_scan", "dbt_full", "queries"}),
    "dbt_only": frozenset({"full_scan", "dbt_full", "incremental_scan", "dbt_incremental",
                           "worker"}),
}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cores = os.cpu_count() or 1
        self.date = datetime.now(UTC).isoformat(timespec="seconds")
        self.sections: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        chosen = [SUBSETS[flag] for flag in SUBSETS if getattr(args, flag, False)]
        self.only: frozenset[str] | None = frozenset.union(*chosen) if chosen else None

    def wants(self, name: str) -> bool:
        """Whether section ``name`` is in the subset asked for."""
        return self.only is None or name in self.only

    def section(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """Run one section and record its result (None if it failed or is not in the subset
        asked for)."""
        if not self.wants(name):
            return None
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
            message = str(exc) if isinstance(exc, BenchError) else (
                f"{type(exc).__name__}: {exc}")
            if not isinstance(exc, BenchError):
                traceback.print_exc(file=sys.stderr)
            self.errors[name] = message
            self.sections[name] = {"error": message, "cores": self.cores, "date": self.date}
            print(f"[bench] {name} FAILED: {message}", file=sys.stderr, flush=True)
            return None
        result = {**result, "cores": self.cores, "date": self.date}
        self.sections[name] = result
        print(f"[bench] {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr,
              flush=True)
        return result


def _rounds_detail(s: dict[str, Any], name: str) -> str:
    """"median of N rounds (min-max s)", for a figure measured in rounds (one round before
    2026-12-07 10:00: nothing)."""
    samples = _get(s, f"{name}.samples")
    if not samples:
        return ""
    return (f"median of {samples} rounds ({_fmt(_get(s, name + '.seconds_min'))}-"
            f"{_fmt(_get(s, name + '.seconds_max'))} s)")


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


#: An incremental scan's options for one that finds nothing: no lookback (the default 300 s
#: would read the last round's changes again), so the search starts at the stored cursor.
NOTHING_TO_READ = ("--lookback-seconds", "0")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from loader.sandbox.ratelimit import TEN_SECONDLY_WINDOW_S, TIERS

    from . import ceilings, naive, queries, scans

    if args.deals < args.tenants or args.tenants < 1:
        raise BenchError("--deals must be at least --tenants, and --tenants at least 1")
    bench = Bench(args)
    tenants = [f"bench-t{i + 1:03d}" for i in range(args.tenants)]
    counts = dict(zip(tenants, _split(args.deals, args.tenants), strict=True))
    per_tenant = args.deals // args.tenants
    concurrency = args.concurrency or min(args.tenants, 4)
    naive_deals = args.naive_deals or min(per_tenant, 5000)
    tier = TIERS[args.rate_limit_tier]
    rl_seconds = 6.0 if args.quick else args.rate_limit_seconds
    rl_scale = 0.02 if args.quick else args.time_scale
    allowed_rate = tier.ten_secondly / (TEN_SECONDLY_WINDOW_S * rl_scale)
    rl_deals = 3000 if args.quick else max(500, int(allowed_rate * rl_seconds * 50))
    mem_small, mem_large = per_tenant, per_tenant * args.memory_factor
    portals = {**counts, "bench-warm": 50, "bench-rl": rl_deals,
               "bench-mem1": mem_small, "bench-mem5": mem_large}

    # Read by every dbt build the bench runs (their environment is this process's).
    os.environ["LOADER_INDEXED_PROPERTIES"] = args.indexed_properties
    env = BenchEnv(keep=args.keep_home)
    sandbox = None
    try:
        sandbox = Sandbox(portals, args.seed, env.env(), env.home / "sandbox.log")
        base = sandbox.base_url
        bench.sections["setup"] = {
            "deals": args.deals, "tenants": args.tenants, "concurrency": concurrency,
            "seed": args.seed, "loader_home": str(env.home), "sandbox": base,
            "cores": bench.cores, "date": bench.date, "python": platform.python_version(),
            "machine": platform.machine(), "indexed_properties": args.indexed_properties,
        }
        with env.cursor() as cur:
            cur.execute("show server_version")
            bench.sections["setup"]["postgres"] = cur.fetchone()[0]

        scans.warm_up(env, sandbox, "bench-warm")
        bench.sections["setup"]["sandbox_search_columns_seconds"] = \
            sandbox.build_search_columns(tenants)

        def source() -> dict[str, Any]:
            # The first pass makes the sandbox render every page, as the scan's requests do (each
            # measured scan starts with the cache cleared too: see its sandbox_cached_pages).
            # The second pass, from the cache, is shown for reference.
            sandbox.clear_cache()
            cold = ceilings.source_ceiling(base, tenants)
            warm = ceilings.source_ceiling(base, tenants)
            return {**cold, "cold_deals_per_s": cold["deals_per_s"],
                    "warm_deals_per_s": warm["deals_per_s"],
                    "note": "pages rendered by the sandbox, as for the scan; "
                            "warm_deals_per_s: the same pages again from its cache"}

        src = bench.section("source_ceiling", source)
        full = bench.section("full_scan", lambda: scans.scan(
            env, sandbox, "full", tenants, what="full scan", concurrency=concurrency))
        sink = bench.section("sink_ceiling", lambda: ceilings.sink_ceiling(env, tenants))
        if full and src and sink:
            lower = min(src["deals_per_s"], sink["deals_per_s"])
            full["lower_ceiling_deals_per_s"] = lower
            full["lower_ceiling"] = "source" if src["deals_per_s"] <= sink["deals_per_s"] \
                else "sink"
            full["ratio_to_lower_ceiling"] = round(full["deals_per_s"] / lower, 3)

        def naive_reference() -> dict[str, Any]:
            # From a cleared cache as every measured pass: each of its pages rendered, as
            # HubSpot answers every request (its URLs differ from the scan's anyway: requests
            # encodes the commas of the property list).
            sandbox.clear_cache()
            pages_before = sandbox.cache_counters()
            result = naive.naive_reference(env, base, tenants[0], naive_deals)
            return {**result, **scans.pages_since(sandbox, pages_before)}

        nv = bench.section("naive_reference", naive_reference)
        if full and nv:
            full["ratio_to_naive"] = round(full["deals_per_s"] / nv["deals_per_s"], 2)
            nv["extrapolated_seconds_for_n"] = round(args.deals / nv["deals_per_s"], 1)
        if src and nv:
            # The most any loader that keeps up with the source could be over the naive one.
            src["ratio_to_naive"] = round(src["deals_per_s"] / nv["deals_per_s"], 2)

        dbt_full = bench.section("dbt_full", lambda: scans.dbt_build(
            env, full_refresh=True, timeout=args.dbt_timeout))

        # Rounds of a 1% change, `run --all` and `transform` (each build merges one round's
        # change): one sample of either moved by a fifth from run to run on two cores.
        builds: list[dict[str, Any]] = []

        def incremental() -> dict[str, Any]:
            samples = []
            for _ in range(2 if args.quick else max(1, args.rounds)):
                changed = scans.change_deals(env, sandbox, tenants, 0.01)
                sample = scans.scan(env, sandbox, "full", tenants, what="incremental scan",
                                    concurrency=concurrency)
                samples.append({**sample, "changed_deals": changed})
                if dbt_full and bench.wants("dbt_incremental"):
                    builds.append(scans.dbt_build(env, full_refresh=False,
                                                  timeout=args.dbt_timeout))
                    if not builds[-1]["ok"]:
                        break  # the next round's build would meet the same failure
            result = scans.median_of(samples)
            # Then once more with nothing to read: what every incremental scan costs whatever
            # it finds (the command's start, the fork server's imports, each scan's fixed
            # work). Without a lookback, or it would read the last round's changes again.
            idle = scans.scan(env, sandbox, "full", tenants, what="scan with nothing to read",
                              concurrency=concurrency, options=NOTHING_TO_READ)
            result["nothing_to_read"] = idle
            if full:
                result["requests_ratio"] = round(result["requests"] / full["requests"], 4)
                result["seconds_ratio"] = round(result["seconds"] / full["seconds"], 4)
                idle["seconds_ratio"] = round(idle["seconds"] / full["seconds"], 4)
            return result

        inc = bench.section("incremental_scan", incremental)

        def dbt_incremental() -> dict[str, Any]:
            failed = [b for b in builds if not b["ok"]]
            if failed or not builds:
                raise BenchError(failed[0].get("error", "dbt build failed") if failed
                                 else "no incremental build ran")
            result = scans.median_of(builds)
            if dbt_full and dbt_full.get("seconds"):
                result["ratio_to_full"] = round(result["seconds"] / dbt_full["seconds"], 3)
            return result

        if inc:
            bench.section("dbt_incremental", dbt_incremental)

        def worker() -> dict[str, Any]:
            # The same scans and builds through a running worker (python -m loader worker):
            # dlt, the scan processes and the parsed dbt project are there before the commands.
            run = scans.WorkerRun(env, sandbox, tenants, concurrency, timeout=args.dbt_timeout)
            try:
                w_full = run.submit(full_refresh=True)
                after_full = run.next_build()
                w_dbt_full = run.transform(full_refresh=True)
                # One round is one sample of a figure that moves by a tenth from round to round
                # on two cores: the rounds' medians, each round listed in the results.
                rounds, builds = [], []
                last_build = after_full["build_id"]
                for _ in range(2 if args.quick else max(1, args.worker_rounds)):
                    changed = scans.change_deals(env, sandbox, tenants, 0.01)
                    rounds.append({**run.submit(), "changed_deals": changed})
                    builds.append(run.next_build(after=last_build))
                    last_build = builds[-1]["build_id"]
                # Once more with nothing to read (the worker builds after it too).
                w_idle = run.submit(options=NOTHING_TO_READ)
                w_idle_build = run.next_build(after=last_build)
            finally:
                run.stop()
            w_inc = scans.median_of(rounds)
            w_dbt_inc = scans.median_of(builds)
            w_dbt_inc["views_skipped"] = all(b["views_skipped"] for b in builds)
            w_inc["requests_ratio"] = round(w_inc["requests"] / w_full["requests"], 4)
            w_inc["seconds_ratio"] = round(w_inc["seconds"] / w_full["seconds"], 4)
            w_idle["seconds_ratio"] = round(w_idle["seconds"] / w_full["seconds"], 4)
            w_idle["build_seconds"] = w_idle_build["seconds"]
            w_inc["nothing_to_read"] = w_idle
            if w_inc.get("queued_to_done_seconds") and w_full.get("queued_to_done_seconds"):
                w_inc["queued_to_done_ratio"] = round(
                    w_inc["queued_to_done_seconds"] / w_full["queued_to_done_seconds"], 4)
            w_dbt_inc["ratio_to_full"] = round(w_dbt_inc["seconds"] / w_dbt_full["seconds"], 3)
            if src and sink:
                lower = min(src["deals_per_s"], sink["deals_per_s"])
                w_full["ratio_to_lower_ceiling"] = round(w_full["deals_per_s"] / lower, 3)
            return {"ready_seconds": run.ready_seconds,
                    "dbt_parse_seconds": run.dbt_parse_seconds,
                    "full_scan": w_full, "build_after_full_scan": after_full,
                    "dbt_full": w_dbt_full, "incremental_scan": w_inc,
                    "dbt_incremental": w_dbt_inc,
                    "method": "python -m loader worker --concurrency C; submit --all --wait "
                              "(command start to exit); transform --on-worker --full-refresh; "
                              "rounds of a 1% change, submit --all --wait and the worker's own "
                              "build after those scans (medians of the rounds); build seconds "
                              "from loader.dbt_builds"}

        bench.section("worker", worker)
        bench.section("rate_limit", lambda: scans.rate_limit(
            env, sandbox, "bench-rl", tier=args.rate_limit_tier, time_scale=rl_scale))

        def memory() -> dict[str, Any]:
            small = scans.scan(env, sandbox, "mem1", ["bench-mem1"], what="memory scan (N)")
            large = scans.scan(env, sandbox, "mem5", ["bench-mem5"], what="memory scan (5N)")
            return {
                "deals_small": small["deals"], "deals_large": large["deals"],
                "peak_rss_mb_small": small["peak_rss_process_mb"],
                "peak_rss_mb_large": large["peak_rss_process_mb"],
                "growth": round(large["peak_rss_process_mb"] / small["peak_rss_process_mb"], 3),
                "full_scan_peak_rss_mb": full["peak_rss_process_mb"] if full else None,
                "method": "one tenant per run (each loader process holds one tenant's scan): "
                          "N/T and F×N/T deals; kernel ru_maxrss of the loader process",
            }

        bench.section("memory", memory)
        bench.section("queries", lambda: queries.query_latency(
            env, deals=args.query_deals or args.deals,
            tenants=args.query_tenants or args.tenants,
            repeats=5 if args.quick else args.query_repeats))
    finally:
        if sandbox is not None:
            sandbox.stop()
        env.close()
    return {"meta": bench.sections.pop("setup", {}), "sections": bench.sections,
            "errors": bench.errors, "targets": targets(bench.sections)}


def _get(sections: dict[str, Any], path: str) -> Any:
    node: Any = sections
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


#: The size the query targets are set at (``--deals 1000000 --tenants 100``).
QUERY_TARGET_ROWS, QUERY_TARGET_TENANTS = 1_000_000, 100


def targets(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the performance issue: measured figure and met or not (None: n/a)."""
    def t(name: str, value: Any, ok: bool | None, goal: str) -> dict[str, Any]:
        return {"target": name, "goal": goal, "measured": value,
                "met": None if value is None else ok}

    ratio = _get(s, "full_scan.ratio_to_lower_ceiling")
    naive_ratio = _get(s, "full_scan.ratio_to_naive")
    inc_req = _get(s, "incremental_scan.requests_ratio")
    inc_sec = _get(s, "incremental_scan.seconds_ratio")
    w_inc_req = _get(s, "worker.incremental_scan.requests_ratio")
    w_inc_sec = _get(s, "worker.incremental_scan.seconds_ratio")
    w_dbt_ratio = _get(s, "worker.dbt_incremental.ratio_to_full")
    util = _get(s, "rate_limit.utilisation")
    steady_429 = _get(s, "rate_limit.count_429_steady")
    dbt_ratio = _get(s, "dbt_incremental.ratio_to_full")
    rss_small = _get(s, "memory.peak_rss_mb_small")
    rss_large = _get(s, "memory.peak_rss_mb_large")
    growth = _get(s, "memory.growth")
    p95 = _get(s, "queries.max_rls_p95_ms")
    rls = _get(s, "queries.max_rls_ratio_p95")
    # The query targets are set at 1,000,000 deals over 100 tenants: a smaller run shows its
    # figures, met or not "n/a" (make bench's 50,000 deals a tenant are not that shape).
    at_size = ((_get(s, "queries.rows") or 0) >= QUERY_TARGET_ROWS
               and (_get(s, "queries.tenants") or 0) >= QUERY_TARGET_TENANTS)
    return [
        t("full scan / lower ceiling", ratio, ratio is not None and ratio >= 0.5, ">= 0.5"),
        t("full scan / naive", naive_ratio, naive_ratio is not None and naive_ratio >= 10,
          ">= 10x"),
        t("incremental requests / full (run)", inc_req,
          inc_req is not None and inc_req <= 0.03, "<= 0.03"),
        t("incremental seconds / full (worker)", w_inc_sec,
          w_inc_sec is not None and w_inc_sec <= 0.03, "<= 0.03"),
        t("incremental seconds / full (run)", inc_sec, inc_sec is not None and inc_sec <= 0.03,
          "<= 0.03"),
        t("incremental requests / full (worker)", w_inc_req,
          w_inc_req is not None and w_inc_req <= 0.03, "<= 0.03"),
        t("rate-limit utilisation", util, util is not None and util >= 0.95, ">= 0.95"),
        t("429s in steady state", steady_429, steady_429 == 0, "0"),
        t("dbt incremental / full (worker)", w_dbt_ratio,
          w_dbt_ratio is not None and w_dbt_ratio <= 0.10, "<= 0.10"),
        t("dbt incremental / full (transform)", dbt_ratio,
          dbt_ratio is not None and dbt_ratio <= 0.10, "<= 0.10"),
        t("loader peak RSS MB (N, 5N)", None if rss_large is None else [rss_small, rss_large],
          rss_large is not None and max(rss_small, rss_large) < 400, "< 400"),
        t("RSS growth N -> 5N", growth, growth is not None and growth <= 1.15,
          "flat (<= 1.15x)"),
        t("query p95 ms (worst, RLS)", p95, (p95 is not None and p95 <= 20) if at_size else None,
          "<= 20 at 1M / 100"),
        t("RLS overhead p95 (worst)", rls, (rls is not None and rls <= 1.2) if at_size else None,
          "<= 1.2x at 1M / 100"),
    ]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return " / ".join(_fmt(v) for v in value)
    return str(value)


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The results table: (section, figure, value, detail) rows."""
    s = results["sections"]
    out: list[tuple[str, str, str, str]] = []

    def row(section: str, figure: str, path: str, detail: str = "") -> None:
        out.append((section, figure, _fmt(_get(s, path)), detail))

    for name, label in (("source_ceiling", "source ceiling"), ("sink_ceiling", "sink ceiling"),
                        ("full_scan", "full scan (ours)"), ("naive_reference", "naive loader")):
        if "error" in s.get(name, {}):
            out.append((label, "error", "-", s[name]["error"][:80]))
            continue
        row(label, "deals/s", f"{name}.deals_per_s",
            f"{_fmt(_get(s, name + '.deals'))} deals in {_fmt(_get(s, name + '.seconds'))} s")
    row("full scan (ours)", "/ lower ceiling", "full_scan.ratio_to_lower_ceiling",
        f"lower = {_get(s, 'full_scan.lower_ceiling')}")
    row("full scan (ours)", "/ naive", "full_scan.ratio_to_naive")
    row("source ceiling", "/ naive", "source_ceiling.ratio_to_naive",
        "the most a loader that keeps up with the source reaches")
    row("full scan (ours)", "requests", "full_scan.requests")
    row("incremental (1%)", "requests", "incremental_scan.requests",
        f"{_fmt(_get(s, 'incremental_scan.changed_deals'))} deals changed")
    row("incremental (1%)", "seconds", "incremental_scan.seconds",
        _rounds_detail(s, "incremental_scan"))
    row("incremental (1%)", "requests / full", "incremental_scan.requests_ratio")
    row("incremental (1%)", "seconds / full", "incremental_scan.seconds_ratio")
    idle = "incremental_scan.nothing_to_read"
    if _get(s, idle) is not None:  # since 2026-12-07 night
        row("incremental (none)", "seconds", f"{idle}.seconds",
            f"nothing to read; / full {_fmt(_get(s, idle + '.seconds_ratio'))}; "
            f"{_fmt(_get(s, idle + '.requests'))} requests")
    row("rate limit", "used / window", "rate_limit.used_per_window",
        f"allowed {_fmt(_get(s, 'rate_limit.allowed_per_window'))} per "
        f"{_fmt(_get(s, 'rate_limit.window_seconds'))} s ({_get(s, 'rate_limit.tier')})")
    row("rate limit", "utilisation", "rate_limit.utilisation",
        f"{_fmt(_get(s, 'rate_limit.windows_measured'))} steady windows")
    row("rate limit", "429s steady / total", "rate_limit.count_429_steady",
        f"total {_fmt(_get(s, 'rate_limit.count_429_total'))}")
    row("dbt", "full build s", "dbt_full.seconds",
        f"{_fmt(_get(s, 'dbt_full.analytics_deals'))} analytics.deals rows")
    row("dbt", "incremental build s", "dbt_incremental.seconds",
        _rounds_detail(s, "dbt_incremental"))
    row("dbt", "incremental / full", "dbt_incremental.ratio_to_full")
    if "error" in s.get("worker", {}):
        out.append(("worker", "error", "-", s["worker"]["error"][:80]))
    else:
        row("worker", "ready s", "worker.ready_seconds",
            f"dbt project parsed in {_fmt(_get(s, 'worker.dbt_parse_seconds'))} s")
        row("worker", "full scan deals/s", "worker.full_scan.deals_per_s",
            f"{_fmt(_get(s, 'worker.full_scan.deals'))} deals in "
            f"{_fmt(_get(s, 'worker.full_scan.seconds'))} s; / lower ceiling "
            f"{_fmt(_get(s, 'worker.full_scan.ratio_to_lower_ceiling'))}")
        rounds = _get(s, "worker.incremental_scan.samples")  # results before 2026-12-06: one
        row("worker", "incremental (1%) s", "worker.incremental_scan.seconds",
            (f"median of {rounds} rounds "
             f"({_fmt(_get(s, 'worker.incremental_scan.seconds_min'))}-"
             f"{_fmt(_get(s, 'worker.incremental_scan.seconds_max'))} s); "
             if rounds else "one round; ")
            + f"{_fmt(_get(s, 'worker.incremental_scan.requests'))} requests; "
            f"{_fmt(_get(s, 'worker.incremental_scan.changed_deals'))} deals changed")
        row("worker", "incremental s / full", "worker.incremental_scan.seconds_ratio",
            f"requests / full {_fmt(_get(s, 'worker.incremental_scan.requests_ratio'))}")
        row("worker", "incremental queued→done s", "worker.incremental_scan.queued_to_done_seconds",
            f"/ full's {_fmt(_get(s, 'worker.full_scan.queued_to_done_seconds'))} s: "
            f"{_fmt(_get(s, 'worker.incremental_scan.queued_to_done_ratio'))} (without submit's "
            f"start-up)")
        idle = "worker.incremental_scan.nothing_to_read"
        if _get(s, idle) is not None:  # since 2026-12-07 night
            row("worker", "incremental (none) s", f"{idle}.seconds",
                f"nothing to read; / full {_fmt(_get(s, idle + '.seconds_ratio'))}; "
                f"{_fmt(_get(s, idle + '.requests'))} requests; the build after it "
                f"{_fmt(_get(s, idle + '.build_seconds'))} s")
        after = _get(s, "worker.build_after_full_scan.full_refresh")
        if after is not None:  # results before 2026-12-06 evening did not show it
            row("worker", "build after full scan s", "worker.build_after_full_scan.seconds",
                "the worker's own build after the full-refresh scans: "
                + ("rebuilt from the raw history" if after else "merged"))
        row("worker", "dbt full build s", "worker.dbt_full.seconds",
            "transform --on-worker --full-refresh")
        row("worker", "dbt incremental s", "worker.dbt_incremental.seconds",
            f"after the incremental scans; views left as they were: "
            f"{_get(s, 'worker.dbt_incremental.views_skipped')}")
        row("worker", "dbt incremental / full", "worker.dbt_incremental.ratio_to_full")
    row("memory", "peak RSS MB at N/T", "memory.peak_rss_mb_small",
        f"{_fmt(_get(s, 'memory.deals_small'))} deals, one tenant")
    row("memory", "peak RSS MB at 5×N/T", "memory.peak_rss_mb_large",
        f"{_fmt(_get(s, 'memory.deals_large'))} deals, one tenant")
    row("memory", "growth", "memory.growth")
    q = s.get("queries") or {}
    if q.get("available"):
        extra = (f"; {q['synthetic_rows']:,} rows generated with SQL"
                 if q.get("synthetic_rows") else "")
        for name, fig in q["queries"].items():
            out.append(("queries", name,
                        f"{fig['rls_median_ms']:.2f} / {fig['rls_p95_ms']:.2f}",
                        f"owner {fig['owner_median_ms']:.2f} / {fig['owner_p95_ms']:.2f} ms; "
                        f"RLS p95 x{_fmt(fig['rls_ratio_p95'])}"
                        + (f"; first visit {fig['first_visit_median_ms']:.2f} ms"
                           if "first_visit_median_ms" in fig else "")))
        warmed = (f", after a first visit to each of {q['measured_tenants']} tenants"
                  if "measured_tenants" in q else "")
        indexed = q.get("property_indexes")
        indexed = ("" if indexed is None  # results from before the option
                   else f"; property indexes: {', '.join(indexed) or 'none'}")
        out.append(("queries", "rows / tenants", f"{q['rows']:,}",
                    f"{q['tenants']} tenants, median / p95 ms, RLS as analyst{warmed}{extra}"
                    f"{indexed}"))
    else:
        out.append(("queries", "-", "-", q.get("note") or q.get("error") or "not run"))
    return out


def _title(results: dict[str, Any]) -> str:
    meta = results["meta"]
    return (f"make bench: {meta.get('deals', 0):,} deals / {meta.get('tenants')} tenants, "
            f"{meta.get('cores')} cores, {meta.get('date')}, PostgreSQL {meta.get('postgres')}")


def render(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    table = Table(title=_title(results))
    for col in ("section", "figure", "value", "detail"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for cells in rows(results):
        table.add_row(*cells)
    console.print(table)

    tt = Table(title="targets")
    for col in ("target", "goal", "measured", "met"):
        tt.add_column(col)
    for t in results["targets"]:
        met = {True: "[green]met[/]", False: "[red]not met[/]", None: "[yellow]n/a[/]"}[t["met"]]
        tt.add_row(t["target"], t["goal"], _fmt(t["measured"]), met)
    console.print(tt)
    for name, message in results["errors"].items():
        console.print(f"[red]section {name} failed:[/] {message}")


def markdown(results: dict[str, Any]) -> str:
    """The two tables as Markdown (the README's Performance section is pasted from this)."""
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"{_title(results)}", "", "| section | figure | value | detail |",
             "|---|---|---:|---|"]
    lines += [f"| {' | '.join(esc(c) for c in cells)} |" for cells in rows(results)]
    lines += ["", "| target | goal | measured | met |", "|---|---|---:|---|"]
    for t in results["targets"]:
        met = {True: "met", False: "not met", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {esc(t['goal'])} | {_fmt(t['measured'])} | {met} |")
    lines += [f"\nsection {name} failed: {message}" for name, message in
              results["errors"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.show is not None:
        try:
            shown = json.loads(args.show.read_text())
            (print(markdown(shown), end="") if args.markdown else render(shown))
        except (OSError, ValueError, KeyError) as exc:
            print(f"bench: error: {args.show} is not a bench results file: {exc}",
                  file=sys.stderr)
            return 1
        return 0
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    try:
        results = run(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2, default=str) + "\n")
    (print(markdown(results), end="") if args.markdown else render(results))
    print(f"results written to {args.results}")
    return 1 if results["errors"] else 0
