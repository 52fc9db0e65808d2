"""The parsed dbt project kept on disk between processes (``$LOADER_HOME/dbt/manifest.pickle``).

Each ``transform`` or ``run`` is a new process, and before it builds, dbt prepares the project:
``dbt parse`` with partial parsing reads ``partial_parse.msgpack``, turns it back into dbt's
objects and checks it against the project's files, 0.5-1 s here on every command even when
nothing changed. The worker parses once and keeps the manifest for as long as the project's
files stay the same (:class:`loader.transform.Builder`); this keeps it for the next process
too: the manifest a parse produced, pickled (10 ms to read back), under a key of what a parse
depends on:

- the project's files and the profile (:func:`loader.transform.project_fingerprint`, the same
  digest that tells the worker to parse again);
- the versions of Python and of dbt's packages (core, common, adapters, postgres: pickles name
  their classes, and the adapters' macros are part of the manifest);
- the environment variables the profile reads (target, host, port, user, database, schema,
  threads; not the password, which only opens the connection) and those the manifest records
  as read while parsing (``manifest.env_vars``: ``LOADER_INDEXED_PROPERTIES`` here), by a
  digest of their values.

Anything else is a new parse, which replaces the entry: a changed key, a file that cannot be
read or unpickled (a half-written one, dbt's classes changed), or none yet. Written through a
temporary file renamed over it; a cache that cannot be written only means parsing next time.
The file can be deleted at any time.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

#: What the file holds: bump when the layout of the pickled dict changes.
FORMAT = 1

#: The profile's variable that is only a credential (never part of the key, nor hashed).
PASSWORD_VARIABLE = "DBT_PG_PASSWORD"


def profile_variables(profile: Path) -> list[str]:
    """The environment variables ``profile`` reads with ``env_var()``, the password left out."""
    names = set(re.findall(r"env_var\(\s*['\"]([A-Za-z_][A-Za-z0-9_]*)['\"]",
                           profile.read_text()))
    return sorted(names - {PASSWORD_VARIABLE})


def _digest(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0\1")
    return digest.hexdigest()


def _environment(names: list[str]) -> str:
    """A digest of the current values of ``names`` (unset is not the same as empty)."""
    return _digest(*(f"{name}={os.environ.get(name, chr(0))}" for name in sorted(names)))


#: The distributions whose code parses the project and whose classes the pickle names.
DBT_DISTRIBUTIONS = ("dbt-core", "dbt-common", "dbt-adapters", "dbt-postgres", "mashumaro")


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in DBT_DISTRIBUTIONS:
        try:
            found.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            found.append(f"{name}=none")
    return ",".join(found)


def key(project_hash: str, profile: Path) -> str:
    """The key of a manifest parsed from the project ``project_hash`` with ``profile``, in this
    environment and with these versions."""
    return _digest(str(FORMAT), project_hash, sys.version, _versions(),
                   _environment(profile_variables(profile)))


def read(path: Path, expected_key: str) -> Any | None:
    """The manifest kept in ``path`` under ``expected_key`` and the same values of the variables
    it was parsed with, or None."""
    try:
        kept = pickle.loads(path.read_bytes())  # noqa: S301 - our own file, as dbt's msgpack
        if (not isinstance(kept, dict) or kept.get("format") != FORMAT
                or kept.get("key") != expected_key
                or kept.get("parse_env") != _environment(kept.get("parse_env_names", []))):
            return None
        return kept["manifest"]
    except Exception:  # noqa: BLE001 - any unreadable entry means parsing again
        return None


def write(path: Path, manifest_key: str, manifest: Any) -> None:
    """Keep ``manifest`` in ``path`` under ``manifest_key``."""
    names = sorted(set(getattr(manifest, "env_vars", None) or {}) - {PASSWORD_VARIABLE})
    try:
        data = pickle.dumps({"format": FORMAT, "key": manifest_key, "parse_env_names": names,
                             "parse_env": _environment(names), "manifest": manifest},
                            protocol=pickle.HIGHEST_PROTOCOL)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-manifest-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        pass
