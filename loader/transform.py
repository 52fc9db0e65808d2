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

import psycopg2

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


def run_dbt_captured(args: list[str], url: str | None = None) -> tuple[int, str]:
    """Run ``dbt ARGS`` against ``url``; return dbt's exit code and its output (not printed)."""
    url = url or db.database_url()
    proc = subprocess.run(dbt_command(args), env=dbt_env(url), check=False, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return int(proc.returncode), proc.stdout


#: What an incremental ``transform`` leaves out of ``dbt build`` (a ``--full-refresh`` build runs
#: everything): the data tests that repeat a constraint PostgreSQL enforces on every write
#: (primary keys, unique, not null and check constraints of the contracts, the deals ->
#: scan_jobs foreign key; tagged ``enforced_by_database``), which no merge can break, and the
#: unit tests, which test the models' SQL on fixed rows and so cannot change between two builds
#: of the same code. Every other data test runs on every build.
INCREMENTAL_EXCLUDE = ["tag:enforced_by_database", "test_type:unit"]


def build(url: str | None = None, *, full_refresh: bool = False, quiet: bool = False,
          select: list[str] | None = None) -> None:
    """``dbt build`` (optionally ``--full-refresh``); a one-line error if it fails. An
    incremental build leaves out :data:`INCREMENTAL_EXCLUDE`."""
    args = ["build"]
    if full_refresh:
        args.append("--full-refresh")
    if select:
        args += ["--select", *select]
    if not full_refresh:
        args += ["--exclude", *INCREMENTAL_EXCLUDE]
    code = run_dbt(args, url, quiet=quiet)
    if code != 0:
        raise LoaderError(f"dbt build failed (exit {code}); see the dbt output above")
    count_quarantined(url)
    vacuum_marts(url)


#: The marts analysts query most, vacuumed after each build (see :func:`vacuum_marts`).
VACUUMED_MARTS = ("analytics.deals", "analytics.scan_jobs")


def vacuum_marts(url: str | None = None) -> list[str]:
    """``vacuum (analyze)`` the marts of :data:`VACUUMED_MARTS` that exist; return them.

    A build leaves new row versions that no vacuum has marked all-visible yet, so index-only
    scans (the covering indexes of analytics.deals) would still read the heap for every row until
    autovacuum comes by; and the planner's statistics lag behind the merge. VACUUM cannot run in a
    transaction, hence not in a dbt post-hook: the loader runs it after the build, in autocommit.
    On a table whose pages are already all-visible it only visits the pages the build changed.
    """
    conn = db.connect(url, autocommit=True)
    vacuumed: list[str] = []
    try:
        with conn.cursor() as cur:
            for relation in VACUUMED_MARTS:
                cur.execute("select to_regclass(%s) is not null", (relation,))
                if not cur.fetchone()[0]:
                    continue
                try:
                    cur.execute(f"vacuum (analyze) {relation}")
                except psycopg2.Error as exc:
                    raise LoaderError(
                        f"dbt build done, but vacuum (analyze) of {relation} failed: "
                        f"{_first_line(exc)}; run it by hand: vacuum (analyze) {relation}"
                    ) from None
                vacuumed.append(relation)
    finally:
        conn.close()
    return vacuumed


#: Per scan job, how many quarantined records have been added to its ``failed_items`` so far:
#: what makes :func:`count_quarantined` idempotent (it adds only the difference).
QUARANTINE_COUNTS_DDL = """
create table if not exists loader.scan_quarantine_counts (
    scan_job_id varchar(50) primary key,
    quarantined integer not null,
    counted_at timestamptz not null default now()
)
"""

#: The seed's success-rate formula applied to the new failed count (``new_failed``).
_NEW_FAILED = "greatest(jobs.failed_items + changes.added, 0)"
_SUCCESS_RATE = (
    "case when jobs.total_items > 0 then "
    f"round((jobs.total_items - least({_NEW_FAILED}, jobs.total_items)) * 100.0 "
    "/ jobs.total_items, 2)::text || '%' else '100%' end"
)

#: Adds to each finished scan's failed_items the records of it that dbt put in
#: analytics.deals_quarantine since the last time (not those the loader rejected and counted
#: itself), in loader.scan_jobs and in the analytics.scan_jobs mart alike; returns the scans.
_COUNT_QUARANTINED = f"""
with quarantined as (
    select scan_job_id, count(distinct raw_row_id)::integer as quarantined
    from analytics.deals_quarantine
    where not counted_by_loader
    group by scan_job_id
),
changes as (
    select
        quarantined.scan_job_id,
        quarantined.quarantined,
        quarantined.quarantined - coalesce(counted.quarantined, 0) as added
    from quarantined
    left join loader.scan_quarantine_counts as counted using (scan_job_id)
    where quarantined.quarantined is distinct from counted.quarantined
),
updated_jobs as (
    update loader.scan_jobs as jobs
    set failed_items = {_NEW_FAILED}, success_rate = {_SUCCESS_RATE}
    from changes
    where jobs.id = changes.scan_job_id
        and jobs.status in ('completed', 'failed', 'cancelled')
    returning jobs.id, jobs.failed_items, jobs.success_rate, jobs.updated_at
),
mart_jobs as (
    update analytics.scan_jobs as jobs
    set failed_items = updated_jobs.failed_items,
        success_rate = updated_jobs.success_rate,
        updated_at = updated_jobs.updated_at at time zone 'UTC'
    from updated_jobs
    where jobs.id = updated_jobs.id
    returning jobs.id
),
recorded as (
    insert into loader.scan_quarantine_counts as counted (scan_job_id, quarantined)
    select changes.scan_job_id, changes.quarantined
    from changes
    inner join updated_jobs on updated_jobs.id = changes.scan_job_id
    on conflict (scan_job_id) do update
    set quarantined = excluded.quarantined, counted_at = now()
    returning scan_job_id
)
select scan_job_id from recorded
"""


def _first_line(exc: BaseException) -> str:
    """The first line of a database error's message (its type name if it has none)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def count_quarantined(url: str | None = None) -> list[str]:
    """Add each finished scan's newly quarantined records to its ``failed_items`` (and recompute
    ``success_rate``) in ``loader.scan_jobs`` and ``analytics.scan_jobs``; return the scan job ids
    changed. Idempotent: running it again after an unchanged build changes nothing."""
    try:
        return _count_quarantined(url)
    except psycopg2.Error as exc:
        raise LoaderError(
            "dbt build done, but adding quarantined records to failed_items failed: "
            f"{_first_line(exc)}"
        ) from None


def _count_quarantined(url: str | None) -> list[str]:
    with db.transaction(url) as cur:
        cur.execute(
            "select to_regclass('analytics.deals_quarantine') is not null "
            "and to_regclass('loader.scan_jobs') is not null "
            "and to_regclass('analytics.scan_jobs') is not null"
        )
        if not cur.fetchone()[0]:
            return []
        cur.execute(
            "select pg_advisory_xact_lock(hashtextextended('hubspot-loader:quarantine', 0))"
        )
        cur.execute(QUARANTINE_COUNTS_DDL)
        cur.execute(_COUNT_QUARANTINED)
        return [row[0] for row in cur.fetchall()]


def run_sqlfluff(args: list[str], url: str | None = None) -> int:
    """Run ``sqlfluff ARGS`` from the project root with dbt's profile and connection set up."""
    url = url or db.database_url()
    env = dbt_env(url)
    env["DBT_PROFILES_DIR"] = str(_profiles_dir())
    executable = Path(sys.executable).with_name("sqlfluff")
    cmd = [str(executable) if executable.exists() else "sqlfluff", *args]
    return subprocess.run(cmd, env=env, cwd=settings.PROJECT_ROOT, check=False).returncode
