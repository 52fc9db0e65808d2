"""``loader.dbt_speedups``: dbt's configuration schemas kept on disk and read back by later
processes, validating exactly as dbt's own; a behaviour flag's source found without
``inspect.stack()``, the same as dbt finds it; a graph summary without serialising each node,
the same as dbt's."""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from loader.dbt_import import dbt_runner

dbt_runner()  # dbt imported as the loader imports it

from dbt.contracts.project import Project, ProjectFlags  # noqa: E402
from dbt_common import dataclass_schema  # noqa: E402
from dbt_common.behavior_flags import Behavior, BehaviorFlagRendered  # noqa: E402
from dbt_common.dataclass_schema import ValidationError  # noqa: E402

from loader import dbt_speedups  # noqa: E402
from tests.conftest import python_json  # noqa: E402


@pytest.fixture()
def schema_dir(tmp_path: Path) -> Iterator[Path]:
    dbt_speedups.uninstall()
    dbt_speedups.install(tmp_path / "jsonschema")
    yield tmp_path / "jsonschema"
    dbt_speedups.uninstall()


def _dbts_own(cls: type) -> dict:
    """The schema as dbt builds it (its own function, not the cache)."""
    original = dbt_speedups._installed.get("json_schema") \
        or dataclass_schema.dbtClassMixin.__dict__["json_schema"]
    return original.__func__.__wrapped__(cls)


def test_a_schema_is_kept_on_disk_and_is_dbts_own(schema_dir: Path) -> None:
    schema = Project.json_schema()
    assert schema == _dbts_own(Project)
    assert json.loads(dbt_speedups.schema_file(Project).read_text()) == schema
    assert ProjectFlags.json_schema() == _dbts_own(ProjectFlags)
    assert len(list(schema_dir.glob("*.json"))) == 2
    assert Project.json_schema() is schema  # the process keeps it too


def test_validation_still_rejects_what_dbt_rejects(schema_dir: Path) -> None:
    good = {"name": "p", "version": "1.0", "config-version": 2, "profile": "p"}
    Project.validate(good)
    with pytest.raises(ValidationError, match="config-version"):
        Project.validate({**good, "config-version": "two"})
    Project.validate(good)  # read back from the file: the same verdicts
    with pytest.raises(ValidationError):
        Project.validate({**good, "name": 42})


def test_an_unreadable_file_is_built_again_and_rewritten(schema_dir: Path) -> None:
    schema = Project.json_schema()
    path = dbt_speedups.schema_file(Project)
    path.write_text("{not json")
    dbt_speedups.uninstall()  # a new process: nothing in memory
    dbt_speedups.install(schema_dir)
    assert Project.json_schema() == schema
    assert json.loads(path.read_text()) == schema


PROCESS = """
import json, sys
from pathlib import Path
from loader.dbt_import import dbt_runner
dbt_runner()
from dbt_common import dataclass_schema
from loader import dbt_speedups
built = []
real = dataclass_schema.build_json_schema
def counting(cls, *args, **kwargs):
    built.append(cls.__name__)
    return real(cls, *args, **kwargs)
dataclass_schema.build_json_schema = counting
dbt_speedups.install(Path(sys.argv[1]))
from dbt.contracts.project import Project
Project.validate({"name": "p", "version": "1.0", "config-version": 2, "profile": "p"})
print(json.dumps({"built": built, "keys": sorted(Project.json_schema())}))
"""


def test_a_later_process_reads_what_an_earlier_one_built(tmp_path: Path) -> None:
    runs = []
    for _ in range(2):
        runs.append(python_json(PROCESS, str(tmp_path), env=dict(os.environ), timeout=120))
    assert runs[0]["built"] == ["Project"] and runs[1]["built"] == []
    assert runs[0]["keys"] == runs[1]["keys"] and "properties" in runs[0]["keys"]


FLAG = {"name": "some_flag", "default": False, "description": "a flag for the test"}


def _declared_here() -> BehaviorFlagRendered:
    """A behaviour flag declared from this module, as an adapter declares its own."""
    return Behavior([FLAG], {}).some_flag  # type: ignore[attr-defined]


def test_a_flags_source_is_the_module_that_declared_it(schema_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_stack(*args: object, **kwargs: object) -> None:
        raise AssertionError("inspect.stack() called")

    with monkeypatch.context() as patch:
        patch.setattr(inspect, "stack", no_stack)
        fast = _declared_here()._behavior_change_event.flag_source
    dbt_speedups.uninstall()  # dbt's own walk, with inspect.stack()
    assert fast == _declared_here()._behavior_change_event.flag_source == __name__
    with_source = Behavior([{**FLAG, "source": "dbt-example"}], {}).some_flag  # type: ignore
    assert with_source._behavior_change_event.flag_source == "dbt-example"


def test_a_graph_summary_is_dbts_own(database_url: str, schema_dir: Path) -> None:
    from dbt.compilation import Linker

    from loader import transform

    builder = transform.Builder(database_url)
    builder.prepare()
    manifest = builder._manifest
    assert Linker.get_graph_summary.__module__ == "loader.dbt_speedups"
    linker = Linker()
    linker.link_graph(manifest)
    fast = linker.get_graph_summary(manifest)
    manifest.build_parent_and_child_maps()  # as dbt's compile does before the test edges
    linker.add_test_edges(manifest)
    fast_with_tests = linker.get_graph_summary(manifest)
    dbt_speedups.uninstall()  # dbt's own: every node serialised with to_dict
    assert Linker.get_graph_summary.__module__ == "dbt.compilation"
    own_with_tests = linker.get_graph_summary(manifest)
    assert json.dumps(fast_with_tests) == json.dumps(own_with_tests)
    bare = Linker()
    bare.link_graph(manifest)
    assert json.dumps(fast) == json.dumps(bare.get_graph_summary(manifest))
    assert len(fast) > 50 and {"model", "test", "source"} <= {n["type"] for n in fast.values()}
