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
print(json.dumps({{"frozen": frozen, "young": tracked[0]}}))
"""


def test_scan_processes_fork_with_the_preloaded_heap_frozen() -> None:
    assert FORKSERVER_PRELOAD[-1] == "loader.preload_done"  # after every module it freezes
    out = python_json(FORKED.format(preload=list(FORKSERVER_PRELOAD)))
    # The loader, dlt and pyarrow: about 94,000 tracked objects.
    assert out["frozen"] > 50_000, out
    # Without the last preload nothing is frozen (what the assertion above tells apart).
    bare = python_json(FORKED.format(preload=list(FORKSERVER_PRELOAD[:-1])))
    assert bare["frozen"] == 0, bare


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
