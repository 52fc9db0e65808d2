"""The fork server's preload (``runner.FORKSERVER_PRELOAD``) holds what a scan imports, so that
the scan processes forked from it (``run --all``, the worker) do not each import it again."""

from __future__ import annotations

from pathlib import Path

from loader.runner import FORKSERVER_PRELOAD
from tests.conftest import scan_probe

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
