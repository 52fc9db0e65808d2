"""The fork server's preload (``runner.FORKSERVER_PRELOAD``) holds what a scan imports, so that
the scan processes forked from it (``run --all``, the worker) do not each import it again."""

from __future__ import annotations

import os
from pathlib import Path

from loader.runner import FORKSERVER_PRELOAD
from tests.conftest import python_json, scan_probe

#: Packages a scan process imported in its first scan before they were preloaded.
PRELOADED_NOW = ("requests", "chardet", "charset_normalizer", "idna", "pluggy", "urllib3")

PROBE = """
import importlib, json, sys
for name in {preload!r}:
    importlib.import_module(name)
before = set(sys.modules)
from loader.runner import ScanOptions
from loader.scan import run_scan
result = run_scan(ScanOptions({tenant!r}, full_refresh=True))
print(json.dumps({{"status": result.status, "deals": result.processed_items,
                  "new": sorted(set(sys.modules) - before)}}))
"""


def test_a_scan_after_the_preload_imports_almost_nothing_more(database_url: str,
                                                               tmp_path: Path) -> None:
    out = scan_probe(PROBE, tmp_path, "preload", deals=120, seed=5,
                     preload=list(FORKSERVER_PRELOAD))
    assert out["status"] == "completed" and out["deals"] == 120, out
    packages = {name.split(".")[0] for name in out["new"]}
    assert packages.isdisjoint(PRELOADED_NOW), sorted(packages & set(PRELOADED_NOW))
    # What is left is small (dlt's plugin probes, a locale): 11 modules with dlt 1.31; before
    # the last two preloads, about 155.
    assert len(out["new"]) < 40, out["new"]


FORK_SERVER_FIRST = """
import json, sys
import multiprocessing.forkserver as forkserver
def ensure_running():  # where run --all starts the fork server: note, and stop there
    print(json.dumps({"driver_imported": "psycopg2" in sys.modules,
                      "dlt_imported": "dlt" in sys.modules}))
    sys.exit(0)
forkserver.ensure_running = ensure_running
from loader.runner import ScanOptions, run_many
run_many([ScanOptions("tenant-a"), ScanOptions("tenant-b")], concurrency=2)
"""


def test_run_all_starts_the_fork_server_before_anything_it_waits_for(tmp_path: Path) -> None:
    """The fork server's imports are what ``run --all`` waits for first: it is started before
    the command's own process imports the database driver (or anything of dlt's)."""
    # A server URL that is never reached: nothing here may start the embedded server.
    env = {**os.environ, "LOADER_HOME": str(tmp_path),
           "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}
    out = python_json(FORK_SERVER_FIRST, env=env)
    assert out == {"driver_imported": False, "dlt_imported": False}, out
