"""Running dbt with the same connection the loader uses.

The profile is ``profiles.yml.example`` (only ``env_var()`` calls); we copy it into
``$LOADER_HOME/dbt/profiles.yml`` and hand dbt the connection through ``DBT_PG_*`` variables taken
from the database URL in use. dbt's target and log folders live under ``$LOADER_HOME/dbt`` too, so
parallel runs with different homes (tests) never share them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import db, settings
from .errors import LoaderError

PROFILE_EXAMPLE = "profiles.yml.example"


def dbt_env(url: str) -> dict[str, str]:
    """Environment for a dbt subprocess pointed at ``url``."""
    params = db.connection_params(url)
    env = dict(os.environ)
    env.update(
        DBT_PG_HOST=params.host,
        DBT_PG_PORT=str(params.port),
        DBT_PG_USER=params.user,
        DBT_PG_PASSWORD=params.password,
        DBT_PG_DBNAME=params.dbname,
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        DBT_LOG_PATH=str(dbt_home() / "logs"),
        DBT_TARGET_PATH=str(dbt_home() / "target"),
    )
    return env


def dbt_home() -> Path:
    """Where the generated profile, dbt's target/ and logs/ live."""
    return settings.loader_home() / "dbt"


def _profiles_dir() -> Path:
    home = dbt_home()
    home.mkdir(parents=True, exist_ok=True)
    example = settings.PROJECT_ROOT / PROFILE_EXAMPLE
    target = home / "profiles.yml"
    if not target.exists() or target.read_bytes() != example.read_bytes():
        shutil.copyfile(example, target)
    return home


def dbt_command(args: list[str]) -> list[str]:
    """The full dbt command line for ``args`` (project and profiles dirs added)."""
    executable = Path(sys.executable).with_name("dbt")
    return [
        str(executable) if executable.exists() else "dbt",
        *args,
        "--project-dir",
        str(settings.dbt_project_dir()),
        "--profiles-dir",
        str(_profiles_dir()),
    ]


def run_dbt(args: list[str], url: str | None = None, *, quiet: bool = False) -> int:
    """Run ``dbt ARGS`` against ``url`` (default: the URL in use); return dbt's exit code."""
    url = url or db.database_url()
    kwargs: dict[str, object] = {}
    if quiet:
        kwargs = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    proc = subprocess.run(dbt_command(args), env=dbt_env(url), check=False, **kwargs)  # type: ignore[call-overload]
    if quiet and proc.returncode != 0:
        sys.stderr.write(proc.stdout)
    return int(proc.returncode)


def build(url: str | None = None, *, full_refresh: bool = False, quiet: bool = False,
          select: list[str] | None = None) -> None:
    """``dbt build`` (optionally ``--full-refresh``); a one-line error if it fails."""
    args = ["build"]
    if full_refresh:
        args.append("--full-refresh")
    if select:
        args += ["--select", *select]
    code = run_dbt(args, url, quiet=quiet)
    if code != 0:
        raise LoaderError(f"dbt build failed (exit {code}); see the dbt output above")


def run_sqlfluff(args: list[str], url: str | None = None) -> int:
    """Run ``sqlfluff ARGS`` from the project root with dbt's profile and connection set up."""
    url = url or db.database_url()
    env = dbt_env(url)
    env["DBT_PROFILES_DIR"] = str(_profiles_dir())
    executable = Path(sys.executable).with_name("sqlfluff")
    cmd = [str(executable) if executable.exists() else "sqlfluff", *args]
    return subprocess.run(cmd, env=env, cwd=settings.PROJECT_ROOT, check=False).returncode
