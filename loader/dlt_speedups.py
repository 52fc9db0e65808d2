"""Two places where dlt repeats work a scan process does not need repeated.

**Type-hint checks in configuration lookups, remembered per hint.**

dlt resolves a configuration (writer buffers, normalizers, destination client, load jobs) some
150 times per scan, and for every field and every provider it asks two questions of the field's
type hint: is it a secret (``is_secret_hint``), and what does it unwrap to
(``extract_inner_hint``). Both walk the hint with ``typing`` introspection each time, and were a
tenth of the CPU of an incremental scan in a worker's scan process (cProfile; about 0.07 of 0.54
CPU seconds per scan after a 1% change, README "Performance"). The answers depend only on the
hint (and the flags passed), so :func:`install` wraps both in an LRU cache. A hint that cannot
be hashed is answered by dlt's function as before.

Every binding of the original functions in the dlt modules loaded so far is replaced (modules
imported later take the wrapped ones from where dlt defines them).

**A pipeline's schema, not read from disk again while its file is unchanged.** A pipeline's
``LiveSchemaStorage`` hands out one live ``Schema`` per name; on every lookup whose live schema
has no unsaved changes it reads the schema file again, parses and validates it and rebuilds the
live schema from it, to pick up changes made by another process. dlt looks the default schema
up a dozen times per scan (for instance to learn the naming convention for the destination's
capabilities): another tenth of a small scan's CPU. Here the lookup returns the live schema as
it is when the file has the same identity (device, inode, size, modification time in ns) as
when the live schema was last read from it, and the live schema has no unsaved changes: a
reload would rebuild the same content (the schema's version hash covers all of it, and a
committed live schema has its file's hash). dlt writes schema files by replacing them, so any
save, here or in another process, makes the next lookup read the file as before; so does any
live schema set from elsewhere (``set_live_schema``), and a storage with an import schema path
is left to dlt.

**The type hints of dlt's schema specs, read once per spec.** ``validate_dict`` checks a table
schema, a column, the normalizer config against their ``TypedDict`` specs, and asks
``typing.get_type_hints`` for the spec's fields on every call (recursively, once per column):
it evaluates every annotation again each time (dlt's own comment there: "get_type_hints is very
slow and we possibly should cache the result"). dlt computes a resource's table schema, with
that validation, for each item the source yields (a tenth of a full scan's Python time when the
source yielded Arrow tables, py-spy ``--gil``; now once per csv file and per rejected row, whose
table comes from a per-item hint). The hints of a spec evaluated in its own module's
namespace are the same every time (a class's annotations are fixed once it is defined), so
``dlt.common.validation`` gets a version that keeps them per spec and hands out a copy; any
other call goes to the function as before.

**dlt's PostgreSQL sessions kept in a scan process.** dlt opens a session for each load job
and step and closes it after (five or six a small scan). In a process that keeps its sessions
(:mod:`loader.sessions`: the worker's and ``run --all``'s scan processes), closing hands it back
there instead, and opening takes a kept one for the same DSN and ``search_path`` when there is
one, which dlt then resets as it resets a new one (``DISCARD ALL``). Elsewhere both are dlt's.

Installing twice does nothing.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

#: The functions of ``dlt.common.configuration.specs.base_configuration`` that get a cache.
MEMOIZED = ("is_secret_hint", "extract_inner_hint")
#: Hints remembered per function (dlt's configurations use a few hundred).
CACHE_SIZE = 4096


def memoize(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with an LRU cache of its answers; unhashable arguments go to ``fn`` itself."""
    cached = functools.lru_cache(maxsize=CACHE_SIZE)(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return cached(*args, **kwargs)
        except TypeError:  # an unhashable hint (or a wrong call: fn raises it again)
            return fn(*args, **kwargs)

    wrapper.__wrapped_original__ = fn  # type: ignore[attr-defined]
    wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    """Put the cached functions and the schema lookup in place of dlt's (idempotent)."""
    _memoize_hint_checks()
    _keep_unchanged_live_schemas()
    _keep_spec_type_hints()
    _keep_dlt_sessions()


def _memoize_hint_checks() -> None:
    from dlt.common.configuration.specs import base_configuration

    for name in MEMOIZED:
        original = vars(base_configuration)[name]
        if hasattr(original, "__wrapped_original__"):
            continue
        wrapped = memoize(original)
        for module in list(sys.modules.values()):
            namespace = getattr(module, "__dict__", None)
            # vars(), not getattr(): some dlt packages answer unknown attributes lazily (and
            # raise for optional extras that are not installed).
            if (namespace is not None and getattr(module, "__name__", "").startswith("dlt")
                    and namespace.get(name) is original):
                setattr(module, name, wrapped)


#: Attribute of a LiveSchemaStorage: schema name -> identity of its file when last read.
_READ_FROM = "_loader_read_from"


def _file_identity(storage: Any, name: str) -> tuple[int, ...] | None:
    path = storage.storage.make_full_path(storage._file_name_in_store(name, "json"))  # noqa: SLF001
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _keep_unchanged_live_schemas() -> None:
    from dlt.common.storages.live_schema_storage import LiveSchemaStorage

    if getattr(LiveSchemaStorage, "_loader_keeps_unchanged", False):
        return
    dlt_getitem = LiveSchemaStorage.__getitem__
    dlt_set_live = LiveSchemaStorage.set_live_schema
    dlt_remove = LiveSchemaStorage.remove_schema

    def __getitem__(self: Any, name: str) -> Any:
        if self.config.import_schema_path:
            return dlt_getitem(self, name)
        read_from = self.__dict__.setdefault(_READ_FROM, {})
        live = self.live_schemas.get(name)
        # dlt returns a live schema with unsaved changes as it is, and reads the file otherwise.
        unsaved = live is not None and live.is_modified
        identity = _file_identity(self, name)
        if (live is not None and not unsaved and identity is not None
                and read_from.get(name) == identity):
            return live
        schema = dlt_getitem(self, name)  # reads the file (its identity taken before)
        if identity is not None and not unsaved:
            read_from[name] = identity
        return schema

    def set_live_schema(self: Any, schema: Any) -> Any:
        self.__dict__.get(_READ_FROM, {}).pop(schema.name, None)
        return dlt_set_live(self, schema)

    def remove_schema(self: Any, name: str) -> None:
        self.__dict__.get(_READ_FROM, {}).pop(name, None)
        dlt_remove(self, name)

    LiveSchemaStorage.__getitem__ = __getitem__  # type: ignore[method-assign]
    LiveSchemaStorage.set_live_schema = set_live_schema  # type: ignore[method-assign]
    LiveSchemaStorage.remove_schema = remove_schema  # type: ignore[method-assign]
    LiveSchemaStorage._loader_keeps_unchanged = True  # type: ignore[attr-defined]  # noqa: SLF001


def _keep_spec_type_hints() -> None:
    from dlt.common import validation

    original = validation.get_type_hints
    if hasattr(original, "__wrapped_original__"):
        return
    #: (spec, whether its module's namespace was passed) -> its hints.
    known: dict[tuple[Any, bool], dict[str, Any]] = {}

    @functools.wraps(original)
    def get_type_hints(spec: Any, globalns: Any = None, **kwargs: Any) -> Any:
        module = sys.modules.get(getattr(spec, "__module__", None) or "")
        if kwargs or not isinstance(spec, type) or (
                globalns is not None and (module is None or globalns is not vars(module))):
            return original(spec, globalns=globalns, **kwargs)
        key = (spec, globalns is not None)  # None, or the namespace of the spec's module
        hints = known.get(key)
        if hints is None:
            hints = known[key] = original(spec, globalns=globalns)
        return dict(hints)

    get_type_hints.__wrapped_original__ = original  # type: ignore[attr-defined]
    validation.get_type_hints = get_type_hints


def _session_key(client: Any) -> tuple[str, str, str]:
    """What a dlt session is opened with: its DSN and the options carrying its ``search_path``
    (as ``Psycopg2SqlClient.open_connection`` builds them)."""
    query_options = client.credentials.get_query().get("options", "")
    options = f"{query_options} -csearch_path={client.fully_qualified_dataset_name()},public"
    return ("dlt", client.credentials.to_native_representation(), options)


def _keep_dlt_sessions() -> None:
    import psycopg2
    from dlt.destinations.impl.postgres.sql_client import Psycopg2SqlClient

    from . import sessions

    if getattr(Psycopg2SqlClient, "_loader_keeps_sessions", False):
        return
    dlt_open = Psycopg2SqlClient.open_connection
    dlt_close = Psycopg2SqlClient.close_connection

    def open_connection(self: Any) -> Any:
        conn = sessions.take(_session_key(self))
        if conn is None:
            return dlt_open(self)
        self._conn = conn
        try:  # as dlt resets a new session (DISCARD ALL, autocommit): also the alive check
            self._reset_connection()
        except psycopg2.Error:
            self._conn = None
            sessions.release_broken(conn)
            return dlt_open(self)
        return self._conn

    def close_connection(self: Any) -> None:
        conn = self._conn
        if conn is not None and sessions.give_back(_session_key(self), conn):
            self._conn = None
            return
        dlt_close(self)

    Psycopg2SqlClient.open_connection = open_connection  # type: ignore[method-assign]
    Psycopg2SqlClient.close_connection = close_connection  # type: ignore[method-assign]
    Psycopg2SqlClient._loader_keeps_sessions = True  # type: ignore[attr-defined]  # noqa: SLF001
