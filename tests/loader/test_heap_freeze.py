"""What lives as long as a process is kept out of the garbage collector's way (``gc.freeze()``):
the fork server's preloaded modules before scan processes fork from it, dbt and the parsed
project in a process built around a :class:`loader.transform.Builder`. Each probe runs in a
process of its own: freezing is process-wide, and pytest's own heap must not be frozen."""

from __future__ import annotations

import os
from pathlib import Path

from loader.runner import FORKSERVER_PRELOAD
from tests.conftest import python_json

FORKED = """
import gc, json, multiprocessing
from concurrent.futures import ProcessPoolExecutor
context = multiprocessing.get_context("forkserver")
context.set_forkserver_preload({preload!r})
with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
    frozen = pool.submit(gc.get_freeze_count).result()
    tracked = pool.submit(gc.get_count).result()
    collecting = pool.submit(gc.isenabled).result()
print(json.dumps({{"frozen": frozen, "young": tracked[0], "collecting": collecting}}))
"""


def test_scan_processes_fork_with_the_preloaded_heap_frozen() -> None:
    assert FORKSERVER_PRELOAD[0] == "loader.preload_start"  # before every module: collector off
    assert FORKSERVER_PRELOAD[-1] == "loader.preload_done"  # after every module it freezes
    out = python_json(FORKED.format(preload=list(FORKSERVER_PRELOAD)))
    # The loader, dlt and pyarrow: about 94,000 tracked objects, and what their imports left
    # unreachable while the collector was off (about 58,000).
    assert out["frozen"] > 50_000, out
    # A scan process runs with the collector on: the last preload turned it on again.
    assert out["collecting"] is True, out
    # Without the last preload nothing is frozen and the collector stays off (what the
    # assertions above tell apart).
    bare = python_json(FORKED.format(preload=list(FORKSERVER_PRELOAD[:-1])))
    assert bare["frozen"] == 0, bare
    assert bare["collecting"] is False, bare


BUILDER = """
import gc, json, weakref
from loader.transform import Builder
builder = Builder({url!r}, freeze_heap={freeze!r})
builder.prepare()
first = weakref.ref(builder._manifest)
frozen_first = gc.get_freeze_count()
builder._project_hash = "changed"  # as if a project file changed: parsed again
builder.prepare()
print(json.dumps({{"frozen_first": frozen_first, "frozen_again": gc.get_freeze_count(),
                  "first_collected": first() is None,
                  "nodes": len(builder._manifest.nodes)}}))
"""


def test_a_builder_freezes_dbt_and_its_project_and_frees_a_replaced_one(
        database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "LOADER_HOME": str(tmp_path)}
    out = python_json(BUILDER.format(url=database_url, freeze=True), env=env)
    assert out["nodes"] > 20, out
    # dbt's modules and the manifest (dbt alone is several hundred thousand objects).
    assert out["frozen_first"] > 100_000, out
    assert out["frozen_again"] > 100_000, out
    # The manifest a new parse replaced was not kept frozen for ever.
    assert out["first_collected"] is True, out
    plain = python_json(BUILDER.format(url=database_url, freeze=False), env=env)
    assert plain["frozen_first"] == 0 and plain["frozen_again"] == 0, plain


IMPORT_COLLECTIONS = """
import gc, json
from loader import dbt_import
from loader.transform import Builder
collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(1))
imported = dbt_import.dbt_runner
def counted(*args, **kwargs):
    before = len(collections)
    runner = imported(*args, **kwargs)
    counted.during_import = len(collections) - before  # collections while dbt was imported
    return runner
dbt_import.dbt_runner = counted
caller_disabled = {caller_disabled!r}
if caller_disabled:
    gc.disable()
Builder({url!r}, freeze_heap={freeze!r}).prepare()
print(json.dumps({{"during_import": counted.during_import, "collecting": gc.isenabled()}}))
"""


def test_a_builder_imports_dbt_with_the_collector_off_and_turns_it_on_again(
        database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "LOADER_HOME": str(tmp_path)}

    def probe(freeze: bool, caller_disabled: bool = False) -> dict[str, object]:
        return python_json(IMPORT_COLLECTIONS.format(
            url=database_url, freeze=freeze, caller_disabled=caller_disabled), env=env)

    frozen = probe(True)
    assert frozen == {"during_import": 0, "collecting": True}, frozen
    # A builder that does not freeze its process's heap leaves the collector alone: it runs
    # while dbt is imported (what the assertion above tells apart).
    plain = probe(False)
    assert plain["during_import"] > 0 and plain["collecting"] is True, plain
    # A collector the caller turned off stays off.
    off = probe(True, caller_disabled=True)
    assert off == {"during_import": 0, "collecting": False}, off
