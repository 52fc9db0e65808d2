"""dbt's parsed project kept on disk between processes, for a new process that builds.

Each new ``transform`` or ``run`` process had dbt parse the project before it could build:
with nothing changed that is dbt's partial parse, which reads ``partial_parse.msgpack`` back
into its objects and checks every project file against it (0.3 s of a 2.4 s ``transform`` after
a 1% change on 2 cores, mashumaro generating the code that reads each class on the way;
README "Performance"). The worker parses once and keeps the result while the project's files
are unchanged (``Builder``); this keeps that same result on disk for the next process:
``pickle`` of dbt's ``Manifest``, read back in about 0.01 s. Not through dbt's own
``Manifest.__reduce_ex__``, which passes the fields positionally and in dbt-core 1.11 lacks
``fixtures``: every private lookup after it lands one field early (a process built from such
a copy failed its second build with ``RefableLookup.find() missing ... 'manifest'``). Here a
manifest is rebuilt from its public fields by name (:func:`_manifest_from`), with the public
attributes the parse set besides them (``child_map``, ``parent_map``); its lookups, lock and
parsing statistics, all private with defaults, are made anew (lookups on first use).

An entry is used only for the same inputs a parse reads, and is named by a digest of them: the
project's files and the profile (``transform.project_fingerprint``, what the worker's own
re-parse check uses), the project and profiles folders, every ``DBT_*`` environment variable
(the database, schema and target the profile renders, dbt's own flags) but those whose name says
they hold a secret (``scan_jobs.secret_name``: the password, tokens), and the versions of
Python, dbt-core, dbt-common, dbt-adapters, dbt-postgres and mashumaro. The environment
variables the project read while parsing (``env_var()``; dbt records them in the manifest, as
for its own partial parse) are compared after reading, as dbt compares them: any that changed
means a parse. Anything else that stops an entry from being read (a file cut short, another dbt
version's classes) means a parse as well, and the parse writes a new entry. Entries are written
to a temporary name and renamed; the newest :data:`KEEP` are kept. The folder
(``$LOADER_HOME/dbt/manifest``) holds what dbt's ``partial_parse.msgpack`` holds, under the same
owner, and can be deleted at any time.
"""

from __future__ import annotations

import copyreg
import dataclasses
import hashlib
import io
import logging
import os
import pickle
from pathlib import Path
from typing import Any

from .jinja_cache import package_versions, write_atomic
from .scan_jobs import secret_name

logger = logging.getLogger(__name__)

#: Entries kept (one per project state and database; tests use several databases).
KEEP = 8
#: dbt's value, in a manifest's ``env_vars``, of a variable the project read with its default.
DEFAULT_ENV_PLACEHOLDER = "DBT_DEFAULT_PLACEHOLDER"
_PACKAGES = ("dbt-core", "dbt-common", "dbt-adapters", "dbt-postgres", "mashumaro")


def cache_key(project_hash: str, args: list[str], env: dict[str, str]) -> str:
    """The entry's file name for a parse with ``args`` under ``env`` (see the module)."""
    digest = hashlib.sha256()
    parts = [package_versions(_PACKAGES), project_hash, *args]
    parts += [f"{name}={value}" for name, value in sorted(env.items())
              if name.startswith("DBT_") and not secret_name(name)]
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0\1")
    return digest.hexdigest() + ".pickle"


def env_vars_unchanged(manifest: Any, env: dict[str, str]) -> bool:
    """Whether every environment variable the project read while parsing has the value it had
    (a default stays a default): dbt's own test before a partial parse keeps a file."""
    for name, before in (getattr(manifest, "env_vars", None) or {}).items():
        now = env.get(name)
        if now is None and before == DEFAULT_ENV_PLACEHOLDER:
            continue
        if now != before:
            return False
    return True


def load(folder: Path, key: str, env: dict[str, str]) -> Any:
    """The manifest kept under ``key``, or None (none kept, unreadable, or stale)."""
    path = folder / key
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        manifest = pickle.loads(data)  # noqa: S301 - written by this loader, in its own home
    except Exception as exc:  # noqa: BLE001 - any unreadable entry means: parse
        logger.debug("manifest cache: %s unreadable (%s); parsing", path.name, exc)
        return None
    if type(manifest).__name__ != "Manifest" or not env_vars_unchanged(manifest, env):
        return None
    return manifest


def _manifest_from(cls: type, fields: dict[str, Any], extra: dict[str, Any]) -> Any:
    """A manifest of class ``cls`` from its public fields, with the public attributes a parse
    set besides them (``child_map``, ``parent_map``); see the module."""
    manifest = cls(**fields)
    for name, value in extra.items():
        setattr(manifest, name, value)
    return manifest


def _reduce_manifest(manifest: Any) -> tuple[Any, tuple[type, dict[str, Any], dict[str, Any]]]:
    names = {f.name for f in dataclasses.fields(manifest)}
    fields = {name: getattr(manifest, name) for name in names if not name.startswith("_")}
    extra = {name: value for name, value in vars(manifest).items()
             if name not in names and not name.startswith("_")}
    return _manifest_from, (type(manifest), fields, extra)


def dumps(manifest: Any) -> bytes:
    """``manifest`` pickled, a dataclass (dbt's ``Manifest``) by field name (see the module)."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    if dataclasses.is_dataclass(manifest):
        pickler.dispatch_table = {**copyreg.dispatch_table, type(manifest): _reduce_manifest}
    pickler.dump(manifest)
    return out.getvalue()


def save(folder: Path, key: str, manifest: Any) -> None:
    """Keep ``manifest`` under ``key``; drop all but the newest :data:`KEEP` entries. A disk
    that refuses it only means parsing again next time."""
    try:
        data = dumps(manifest)
    except Exception as exc:  # noqa: BLE001 - an unpicklable manifest: parse next time
        logger.debug("manifest cache: not kept (%s)", exc)
        return
    write_atomic(folder / key, data)
    try:
        entries = sorted(folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime_ns)
        for stale in entries[:-KEEP]:
            os.unlink(stale)
    except OSError:
        pass
