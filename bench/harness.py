"""The bench's world: a throwaway ``LOADER_HOME`` with the embedded PostgreSQL, the sandbox in its
own process, and subprocess runs measured for wall time, CPU time and peak memory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024

# Runs the measured command as its only child and reports, from the kernel, the largest RSS any
# process of its tree reached (ru_maxrss of waited-for descendants) and the tree's CPU seconds.
_RUSAGE_WRAPPER = """
import ctypes, json, os, resource, subprocess, sys, time
# A child subreaper (Linux prctl PR_SET_CHILD_SUBREAPER): descendants the command leaves orphaned,
# such as a multiprocessing fork server whose workers ran the scans (run --all), are re-parented
# here and reaped below, so that their CPU and peak RSS count in RUSAGE_CHILDREN too.
try:
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
except (OSError, AttributeError):
    pass
started = time.perf_counter()
code = subprocess.call(sys.argv[2:])
seconds = time.perf_counter() - started
deadline = time.monotonic() + 10  # orphans about to exit; never wait long on a daemon
while time.monotonic() < deadline:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if pid == 0:
        time.sleep(0.02)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    json.dump({"maxrss_kb": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime,
               "seconds": seconds}, out)
sys.exit(code)
"""


@dataclass
class ProcRun:
    """One measured subprocess run."""

    argv: list[str]
    returncode: int
    seconds: float
    stdout: str
    stderr: str
    peak_rss_process: int = 0  # bytes: the largest single process of the tree (kernel hiwater)
    peak_rss_tree: int = 0  # bytes: the largest sum over the tree seen by polling
    cpu_seconds: float = 0.0  # user + system of the whole tree

    def check(self, what: str) -> ProcRun:
        if self.returncode != 0:
            tail = "\n".join((self.stderr or self.stdout).strip().splitlines()[-15:])
            raise BenchError(f"{what} failed (exit {self.returncode}):\n{tail}")
        return self

    def json(self) -> Any:
        return json.loads(self.stdout)


class BenchError(RuntimeError):
    """A bench step failed; the message says which and why."""


def run_measured(argv: list[str], env: dict[str, str], *, cwd: Path = PROJECT_ROOT,
                 poll: float = 0.1, timeout: float | None = None) -> ProcRun:
    """Run ``argv`` to completion, polling its process tree's RSS every ``poll`` seconds."""
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        usage_file = Path(tmp) / "usage.json"
        out_path, err_path = Path(tmp) / "out", Path(tmp) / "err"
        wrapped = [sys.executable, "-c", _RUSAGE_WRAPPER, str(usage_file), *argv]
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            started = time.perf_counter()
            proc = psutil.Popen(wrapped, env=env, cwd=cwd, stdout=out, stderr=err)
            peak_tree = 0
            deadline = None if timeout is None else started + timeout
            while True:
                try:
                    proc.wait(timeout=poll)
                    break
                except psutil.TimeoutExpired:
                    pass
                if deadline is not None and time.perf_counter() > deadline:
                    _kill_tree(proc)
                    raise BenchError(f"{' '.join(argv[:4])} ... timed out after {timeout:.0f} s")
                peak_tree = max(peak_tree, _tree_rss(proc))
            seconds = time.perf_counter() - started
        usage = json.loads(usage_file.read_text()) if usage_file.exists() else {}
        return ProcRun(
            argv=argv,
            returncode=int(proc.returncode or 0),
            # The command's own run time (the wrapper's reaping of orphans is not part of it).
            seconds=float(usage.get("seconds", seconds)),
            stdout=out_path.read_text(errors="replace"),
            stderr=err_path.read_text(errors="replace"),
            peak_rss_process=int(usage.get("maxrss_kb", 0)) * 1024,
            peak_rss_tree=peak_tree,
            cpu_seconds=float(usage.get("cpu_s", 0.0)),
        )


def _tree_rss(proc: psutil.Process) -> int:
    """Sum of RSS over the measured command's tree (the rusage wrapper itself excluded)."""
    total = 0
    try:
        members = proc.children(recursive=True)
    except psutil.Error:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def _kill_tree(proc: psutil.Process) -> None:
    try:
        members = [*proc.children(recursive=True), proc]
    except psutil.Error:
        members = [proc]
    for member in members:
        try:
            member.kill()
        except psutil.Error:
            pass


def token_of(tenant: str) -> str:
    return f"bench-token-{tenant}"


def token_env_of(tenant: str) -> str:
    return "BENCH_HUBSPOT_TOKEN_" + "".join(c if c.isalnum() else "_" for c in tenant).upper()


class Sandbox:
    """``python -m loader sandbox`` in its own process (so it never shares a GIL with anything
    measured), driven through its ``/_sandbox`` control API."""

    def __init__(self, portals: dict[str, int], seed: int, env: dict[str, str],
                 log_path: Path) -> None:
        argv = [sys.executable, "-m", "loader", "sandbox", "--seed", str(seed), "--deals", "0"]
        for tenant, deals in portals.items():
            argv += ["--portal", f"{tenant}={token_of(tenant)}",
                     "--portal-deals", f"{tenant}={deals}"]
        self.portals = dict(portals)
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=self._log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("sandbox listening on "):
            self.stop()
            raise BenchError(f"sandbox did not start: {line or log_path.read_text()[-500:]}")
        self.base_url = line.rsplit(" ", 1)[-1]
        threading.Thread(target=self._drain, daemon=True).start()
        self.http = requests.Session()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"{self.base_url}/_sandbox{path}", json=body,
                                     timeout=60)
        if response.status_code >= 400:
            raise BenchError(f"sandbox {method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def portal_stats(self, tenant: str) -> dict[str, Any]:
        return self._control("GET", f"/portals/{tenant}/stats")

    def cache_counters(self) -> tuple[int, int]:
        """(hits, misses) of the sandbox's rendered-page cache so far."""
        cache = (self._control("GET", "/stats") or {}).get("response_cache") or {}
        return int(cache.get("hits", 0)), int(cache.get("misses", 0))

    def clear_cache(self) -> None:
        """Forget the sandbox's rendered pages: the next request for each is rendered again, as
        HubSpot answers every request. Every measured scan and the source ceiling's first pass
        start from here (their requests can be the same URLs: since 2026-12-06 the loader sends
        its property list with plain commas, as the ceiling's aiohttp client does, and a scan
        after the ceiling was served 3,988 of its 3,996 pages from the cache)."""
        self._control("POST", "/clear-cache")

    def build_search_columns(self, tenants: Iterable[str]) -> float:
        """One search per tenant on the scans' cursor property, as an incremental scan sends
        it; returns the seconds they took.

        The sandbox builds a portal's search columns on its first search (about 8 µs a deal:
        0.4 s for 50,000 here) and keeps them current as deals change; HubSpot's index is always
        there. Measured sections that search (the incremental scans) would otherwise pay that
        once for the sandbox, so the bench makes the first search before it measures."""
        from loader.hubspot import settings

        started = time.perf_counter()
        for tenant in tenants:
            response = self.http.post(
                f"{self.base_url}/crm/v3/objects/deals/search",
                headers={"Authorization": f"Bearer {token_of(tenant)}"}, timeout=120,
                json={"filterGroups": [{"filters": [{"propertyName": settings.CURSOR_PROPERTY,
                                                     "operator": "GTE", "value": "0"}]}],
                      "sorts": [{"propertyName": settings.CURSOR_PROPERTY,
                                 "direction": "ASCENDING"}],
                      "properties": [settings.CURSOR_PROPERTY], "limit": 1})
            if response.status_code != 200:
                raise BenchError(f"sandbox search for {tenant}: {response.status_code} "
                                 f"{response.text[:200]}")
        return round(time.perf_counter() - started, 3)

    def requests_total(self, tenants: Iterable[str]) -> int:
        return sum(self.portal_stats(t)["requests_total"] for t in tenants)

    def update_deal(self, tenant: str, deal_id: str, properties: dict[str, str]) -> None:
        self._control("PATCH", f"/portals/{tenant}/deals/{deal_id}", {"properties": properties})

    def set_rate_limit(self, tenant: str, tier: str, time_scale: float) -> None:
        self._control("POST", f"/portals/{tenant}/ratelimit",
                      {"tier": tier, "time_scale": time_scale, "reset": True})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class BenchEnv:
    """A temporary ``LOADER_HOME`` with its own embedded PostgreSQL; the user's ``.loader`` and
    ``DATABASE_URL`` are never used. ``close()`` stops the server and deletes the home."""

    keep: bool = False
    home: Path = field(init=False)
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="loader-bench-"))
        self.home.chmod(0o755)  # the embedded server runs as its own user when we are root
        os.environ["LOADER_HOME"] = str(self.home)
        os.environ.pop("DATABASE_URL", None)
        from loader import db

        self.url = db.embedded_url()

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            LOADER_HOME=str(self.home),
            DATABASE_URL=self.url,
            RUNTIME__DLTHUB_TELEMETRY="false",
            DBT_SEND_ANONYMOUS_USAGE_STATS="false",
            DO_NOT_TRACK="1",
        )
        env.update(extra)
        return env

    def tenants_env(self, name: str, tenants: Iterable[str], base_url: str) -> dict[str, str]:
        """Environment for ``python -m loader`` scanning ``tenants`` of the sandbox at
        ``base_url`` (a tenants file of their own, tokens in env vars)."""
        tenants = list(tenants)
        path = self.home / f"tenants-{name}.toml"
        path.write_text("".join(
            f'[[tenants]]\nid = "{t}"\ntoken_env = "{token_env_of(t)}"\n\n' for t in tenants))
        extra = {token_env_of(t): token_of(t) for t in tenants}
        extra.update(LOADER_TENANTS_FILE=str(path), HUBSPOT_API_BASE_URL=base_url)
        return self.env(**extra)

    def loader(self, args: list[str], env: dict[str, str], *,
               timeout: float | None = None) -> ProcRun:
        """``python -m loader ARGS`` from the project root, as ``make`` runs it."""
        return run_measured([sys.executable, "-m", "loader", *args], env, timeout=timeout)

    def connect(self, *, autocommit: bool = True):  # type: ignore[no-untyped-def]
        import psycopg2

        conn = psycopg2.connect(self.url, application_name="loader-bench")
        conn.autocommit = autocommit
        return conn

    @contextlib.contextmanager
    def cursor(self, *, autocommit: bool = True) -> Iterator[Any]:
        """A cursor on a connection of its own, committed (unless autocommit) and closed."""
        conn = self.connect(autocommit=autocommit)
        try:
            with conn.cursor() as cur:
                yield cur
            if not autocommit:
                conn.commit()
        finally:
            conn.close()

    def close(self) -> None:
        from loader import db

        try:
            db.stop_embedded()
        finally:
            if not self.keep:
                shutil.rmtree(self.home, ignore_errors=True)
