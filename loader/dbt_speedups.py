"""Three places where dbt repeats, in every process or every build, work whose answer is fixed.

**The JSON schemas of dbt's configuration classes, kept on disk for the next process.** Before a
command runs, dbt checks ``dbt_project.yml``, the profile and its project flags against JSON
schemas of the classes that hold them (``dbtClassMixin.validate``). It builds each schema from
the class with mashumaro the first time a process asks for it and keeps it for that process
only (``functools.lru_cache``): 0.25 s of every ``transform`` or ``run`` process here, for seven
classes (``Project``, ``Configuration``, ``ProjectFlags``, ``PostgresCredentials``...; README
"Performance"). A class's schema depends only on the class, that is on the installed versions
of dbt and mashumaro: :func:`install` makes ``json_schema`` keep each one in
``$LOADER_HOME/dbt/jsonschema`` as JSON, named by a digest of the class's module and name and
the versions of Python, mashumaro, dbt-core, dbt-common, dbt-adapters and dbt-postgres, and
read it back in later processes. Upgrading any of them changes every name, so nothing is ever
invalidated. A schema that does not survive a round trip through JSON unchanged is not kept; a
file that cannot be read is built again and rewritten (written to a temporary name and renamed,
as the template cache does). Validation itself is dbt's as before: only where the schema comes
from changes. Classes with their own ``json_schema`` (dbt's artifacts) are left alone.

**Where a behaviour flag comes from, without ``inspect.stack()``.** An adapter's behaviour flags
(``BehaviorFlagRendered``) record the module that declared them, found by walking the call
stack with ``inspect.stack()``, which also reads source lines for every frame of it, and dbt
does this for every flag whether or not the flag names its source. dbt creates the adapter in
every command (each build in a worker too): 0.18 s of a ``transform`` process and about 0.07 s
of each worker build, for a text that only appears in a warning. :func:`install` gives it a walk
over the frames' modules (``sys._getframe``, each frame's ``__name__``) that returns the same
name: the first module on the stack other than ``dbt_common.behavior_flags``.

**A graph summary without serialising every node.** Before each build dbt writes
``target/graph_summary.json`` (node names, types and edges, for diagnostics), twice over the
graph (with and without test edges), and ``Linker.get_graph_summary`` finds each node's type by
serialising the whole node with ``to_dict`` and reading ``resource_type`` back: every node of
the project twice per build, in a worker's builds too, and in a process that did not parse the
project itself (``loader.manifest_cache``) the first ``to_dict`` of each node class also has
mashumaro generate that method (0.14 s of such a ``transform``). :func:`install` gives it the
node's ``resource_type`` directly, the value ``to_dict`` writes (dbt's enums serialise as their
value); the summary is the same, tested against dbt's own.

Installing twice only moves the schema cache.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from .jinja_cache import package_versions, write_atomic

#: Packages whose classes and code decide a schema's content.
SCHEMA_PACKAGES = ("mashumaro", "dbt-core", "dbt-common", "dbt-adapters", "dbt-postgres")

_installed: dict[str, Any] = {}


def install(schema_dir: Path) -> None:
    """Both speed-ups; the schemas kept in ``schema_dir`` (again: moves the cache)."""
    _installed["dir"] = Path(schema_dir)
    if "json_schema" in _installed:
        return
    _installed["versions"] = package_versions(SCHEMA_PACKAGES)
    _install_schema_cache()
    _install_flag_source()
    _install_graph_summary()


def uninstall() -> None:
    """dbt's own functions again (tests)."""
    from dbt_common.behavior_flags import BehaviorFlagRendered
    from dbt_common.dataclass_schema import dbtClassMixin

    original = _installed.pop("json_schema", None)
    if original is not None:
        dbtClassMixin.json_schema = original  # type: ignore[method-assign]
    source = _installed.pop("default_source", None)
    if source is not None:
        BehaviorFlagRendered._default_source = source  # type: ignore[method-assign]
    _installed.pop("memory", None)
    summary = _installed.pop("graph_summary", None)
    if summary is not None:
        from dbt.compilation import Linker

        Linker.get_graph_summary = summary  # type: ignore[method-assign]


def schema_file(cls: type) -> Path:
    """Where the schema of ``cls`` is kept (see the module's docstring)."""
    digest = hashlib.sha256()
    for part in (_installed["versions"], cls.__module__, cls.__qualname__):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0\1")
    return _installed["dir"] / f"{digest.hexdigest()}.json"


def _install_schema_cache() -> None:
    from dbt_common.dataclass_schema import dbtClassMixin

    original = dbtClassMixin.__dict__["json_schema"]  # a classmethod over an lru_cache
    build = original.__func__
    memory: dict[type, dict[str, Any]] = {}
    _installed["json_schema"], _installed["memory"] = original, memory

    def json_schema(cls: type) -> dict[str, Any]:
        schema = memory.get(cls)
        if schema is not None:
            return schema
        path = schema_file(cls)
        try:
            schema = json.loads(path.read_bytes())
        except (OSError, ValueError):
            schema = None
        if not isinstance(schema, dict):
            schema = build(cls)
            try:
                text = json.dumps(schema, sort_keys=True)
                if json.loads(text) == schema:
                    write_atomic(path, text.encode())
            except (TypeError, ValueError):
                pass  # not plain JSON: built in each process, as by dbt
        memory[cls] = schema
        return schema

    dbtClassMixin.json_schema = classmethod(json_schema)  # type: ignore[method-assign,assignment]


def _install_flag_source() -> None:
    from dbt_common import behavior_flags
    from dbt_common.behavior_flags import BehaviorFlagRendered

    _installed["default_source"] = BehaviorFlagRendered.__dict__["_default_source"]
    own = behavior_flags.__name__

    def _default_source() -> str:
        frame = sys._getframe(1)
        while frame is not None:
            name = frame.f_globals.get("__name__")
            if name != own and name in sys.modules:
                return str(name)
            frame = frame.f_back  # type: ignore[assignment]
        return "Unknown"

    BehaviorFlagRendered._default_source = staticmethod(_default_source)  # type: ignore[method-assign,assignment]


def _install_graph_summary() -> None:
    from dbt.compilation import Linker

    _installed["graph_summary"] = Linker.__dict__["get_graph_summary"]

    def get_graph_summary(self: Any, manifest: Any) -> dict[int, dict[str, Any]]:
        index = {name: n for n, name in enumerate(self.graph)}
        nodes: dict[int, dict[str, Any]] = {
            n: {"name": name, "type": _enum_value(manifest.expect(name).resource_type)}
            for name, n in index.items()
        }
        for node in nodes.values():
            successors = [index[s] for s in self.graph.successors(node["name"])]
            if successors:
                node["succ"] = successors
        return nodes

    Linker.get_graph_summary = get_graph_summary  # type: ignore[method-assign]


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)
