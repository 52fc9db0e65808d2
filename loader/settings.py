"""Runtime settings read from the environment, with their defaults, in one place."""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Where the source tree lives (holds ``dbt_project/`` and ``profiles.yml.example``).
PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_API_BASE_URL = "https://api.hubapi.com"
DEFAULT_BATCH_SIZE = 50
#: Search-index lag: an incremental scan re-reads this many seconds before its stored cursor.
DEFAULT_LOOKBACK_SECONDS = 300
#: A build after scans rebuilds the marts from the raw history instead of merging only when the
#: scans landed at least this many deal versions (and a share of the raw history: see
#: ``loader.transform.rebuild_is_cheaper``). ``LOADER_REBUILD_MIN_VERSIONS`` overrides it.
DEFAULT_REBUILD_MIN_VERSIONS = 50_000

# No internet here, and no phoning home anywhere: switched off before dlt or dbt is imported.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# dlt's own log at warnings, wherever the loader runs from (this was in .dlt/config.toml, read
# from the working directory only; a non-empty config file also costs every one of dlt's ~150
# configuration lookups per scan a walk through its TOML document: README "Performance").
os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")

# Arrow buffers from the C library's allocator, which hands freed memory back between batches:
# a loader's peak RSS was 180-218 MB with pyarrow's default (mimalloc) and grew from 50,000 to
# 250,000 deals; with this, 154 -> 163-168 MB (make bench, memory section). Read by pyarrow when
# it first allocates, so it is set before anything imports it.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def loader_home() -> Path:
    """Local state: embedded database, dlt pipelines, dbt profile (``LOADER_HOME``)."""
    return Path(os.environ.get("LOADER_HOME") or PROJECT_ROOT / ".loader").resolve()


def database_url_env() -> str | None:
    """``DATABASE_URL`` if set and non-empty; ``None`` means the embedded server."""
    return os.environ.get("DATABASE_URL") or None


def api_base_url() -> str:
    """HubSpot API base URL (``HUBSPOT_API_BASE_URL``); the sandbox's URL in tests and demos."""
    return (os.environ.get("HUBSPOT_API_BASE_URL") or DEFAULT_API_BASE_URL).rstrip("/")


def dbt_project_dir() -> Path:
    """The dbt project (``DBT_PROJECT_DIR``, default ``dbt_project/`` in the source tree)."""
    return Path(os.environ.get("DBT_PROJECT_DIR") or PROJECT_ROOT / "dbt_project").resolve()


def tenants_file() -> Path:
    """The tenants file (``LOADER_TENANTS_FILE``, default ``tenants.toml`` in the working dir)."""
    return Path(os.environ.get("LOADER_TENANTS_FILE") or "tenants.toml")


#: A HubSpot internal property name (lowercase letters, digits, ``_``, a letter first); the
#: dbt macro ``indexed_properties`` checks the same.
PROPERTY_NAME = re.compile(r"[a-z][a-z0-9_]*")


def indexed_properties() -> list[str]:
    """``LOADER_INDEXED_PROPERTIES``: the custom properties that get an index on
    ``analytics.deals`` (comma-separated; dbt reads the variable itself, in
    ``macros/property_indexes.sql``). Checked here too, so that a bad name fails a command at its
    start, before any scan, instead of at the build after the scans."""
    names = [n.strip() for n in (os.environ.get("LOADER_INDEXED_PROPERTIES") or "").split(",")]
    for name in names:
        if name and not PROPERTY_NAME.fullmatch(name):
            from .errors import UsageError

            raise UsageError(f"LOADER_INDEXED_PROPERTIES: {name!r} is not a HubSpot property "
                             "name (lowercase letters, digits and _, starting with a letter)")
    return list(dict.fromkeys(n for n in names if n))


def rebuild_min_versions() -> int:
    """``LOADER_REBUILD_MIN_VERSIONS`` (default :data:`DEFAULT_REBUILD_MIN_VERSIONS`): the fewest
    deal versions a build after scans must take in before it may rebuild instead of merging."""
    text = (os.environ.get("LOADER_REBUILD_MIN_VERSIONS") or "").strip()
    if not text:
        return DEFAULT_REBUILD_MIN_VERSIONS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = -1
    if value < 0:
        from .errors import UsageError

        raise UsageError(f"LOADER_REBUILD_MIN_VERSIONS must be a whole number of deal versions "
                         f"(0 or more), not {text!r}")
    return value
