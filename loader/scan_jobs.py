"""The live scan-job record: the loader's own operational table ``loader.scan_jobs``.

The loader writes it as a scan runs (status, progress, errors); ``python -m loader status`` and
``scans`` read it; dbt materialises the typed ``analytics.scan_jobs`` mart from it. A trigger keeps
the status from ever moving backwards (a terminal status is final), stamps ``started_at`` and
``completed_at`` and keeps ``updated_at``.

One scan per tenant at a time: a scan holds the tenant's session-level advisory lock
(:func:`lock_key`) while it runs, so a job that is ``running`` while no session holds that lock
was left behind by a loader that died (``loader_alive`` is false); the tenant's next scan marks
it failed ("interrupted").

The table is also the queue of ``python -m loader worker``: ``submit`` adds a ``pending`` job of
type ``deals_queued`` (:func:`enqueue`, at most one per tenant), and the worker's scan claims it
(:func:`claim`), which makes it ``running`` as ``deals_full`` or ``deals_incremental``. Every
insert and status change is announced on the channel ``loader_scan_jobs``
(:data:`NOTIFY_CHANNEL`), which the worker and ``submit --wait`` listen on.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from .errors import LoaderError

OPS_SCHEMA = "loader"
STATUSES = ("pending", "running", "completed", "failed", "cancelled")
ACTIVE = ("pending", "running")
TERMINAL = ("completed", "failed", "cancelled")
#: ``scan_type`` of a job ``submit`` queued and no worker has started yet.
QUEUED_TYPE = "deals_queued"
#: Where inserts and status changes of ``loader.scan_jobs`` are announced (payload: a JSON
#: object with the job's ``id``, ``scan_id``, ``tenant_id`` and ``status``).
NOTIFY_CHANNEL = "loader_scan_jobs"

DDL = """
create schema if not exists loader;

create table if not exists loader.scan_jobs (
    id varchar(50) primary key,
    scan_id varchar(255) not null unique,
    status varchar(20) not null
        constraint check_valid_status
        check (status in ('pending', 'running', 'completed', 'failed', 'cancelled')),
    scan_type varchar(50) not null,
    config jsonb not null,
    organization_id varchar(255),
    error_message text,
    started_at timestamptz,
    completed_at timestamptz,
    total_items integer not null default 0,
    processed_items integer not null default 0,
    failed_items integer not null default 0,
    success_rate varchar(20),
    batch_size integer not null default 50,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint check_positive_counts
        check (total_items >= 0 and processed_items >= 0 and failed_items >= 0)
);

create index if not exists idx_ops_scan_org_status on loader.scan_jobs (organization_id, status);
create index if not exists idx_ops_scan_status_created on loader.scan_jobs (status, created_at);

create or replace function loader.scan_jobs_guard() returns trigger language plpgsql as $$
begin
    if old.status in ('completed', 'failed', 'cancelled') and new.status <> old.status then
        raise exception 'scan % is already %, it cannot become %',
            old.scan_id, old.status, new.status;
    end if;
    if old.status = 'running' and new.status = 'pending' then
        raise exception 'scan % is running, it cannot go back to pending', old.scan_id;
    end if;
    if new.status = 'running' and new.started_at is null then
        new.started_at := now();
    end if;
    if new.status in ('completed', 'failed', 'cancelled') then
        new.started_at := coalesce(new.started_at, now());
        new.completed_at := coalesce(new.completed_at, now());
    end if;
    new.updated_at := now();
    return new;
end;
$$;

drop trigger if exists scan_jobs_guard on loader.scan_jobs;
create trigger scan_jobs_guard before update on loader.scan_jobs
    for each row execute function loader.scan_jobs_guard();

-- The worker's queue: at most one queued (not yet started) scan per tenant.
create unique index if not exists idx_ops_scan_queued_per_org on loader.scan_jobs (organization_id)
    where status = 'pending' and scan_type = 'deals_queued';

create or replace function loader.scan_jobs_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('loader_scan_jobs', json_build_object(
        'id', new.id, 'scan_id', new.scan_id, 'tenant_id', new.organization_id,
        'status', new.status)::text);
    return null;
end;
$$;

drop trigger if exists scan_jobs_notify on loader.scan_jobs;
create trigger scan_jobs_notify after insert or update of status on loader.scan_jobs
    for each row execute function loader.scan_jobs_notify();

-- Every dbt build the loader runs (transform, run, the worker), and builds requested from a
-- worker (transform --on-worker): pending until a worker takes them.
create table if not exists loader.dbt_builds (
    id varchar(50) primary key,
    status varchar(20) not null
        constraint check_valid_build_status
        check (status in ('pending', 'running', 'completed', 'failed')),
    full_refresh boolean not null default false,
    requested_by varchar(20) not null,
    requested_at timestamptz not null default now(),
    started_at timestamptz,
    completed_at timestamptz,
    nodes integer,
    views_skipped boolean,
    seconds numeric(12, 3),
    error_message text,
    node_selection text
);

create index if not exists idx_ops_build_status_requested on loader.dbt_builds
    (status, requested_at);

create or replace function loader.dbt_builds_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('loader_dbt_builds', json_build_object(
        'id', new.id, 'status', new.status)::text);
    return null;
end;
$$;

drop trigger if exists dbt_builds_notify on loader.dbt_builds;
create trigger dbt_builds_notify after insert or update of status on loader.dbt_builds
    for each row execute function loader.dbt_builds_notify();
"""

#: Bumped whenever ``DDL`` changes; ``ensure_schema`` re-applies the DDL when the table's comment
#: does not carry the current marker, and does nothing (no locks, no DDL) when it does.
SCHEMA_MARKER = "hubspot-loader live scan jobs, schema v3"

COLUMNS = (
    "id, scan_id, status, scan_type, config, organization_id, error_message, started_at, "
    "completed_at, total_items, processed_items, failed_items, success_rate, batch_size, "
    "created_at, updated_at"
)

#: Whether a loader still holds the scan's tenant lock (only meaningful for active jobs; null for a
#: queued job, which no loader has started yet).
_ALIVE = (
    "case when status = 'running' or (status = 'pending' and scan_type <> 'deals_queued') "
    "then exists ("
    "select 1 from pg_locks where locktype = 'advisory' and objsubid = 1 and granted "
    "and ((classid::int8 << 32) | objid::int8) = "
    "hashtextextended('hubspot-loader:scan:' || organization_id, 0)) end as loader_alive"
)

_SECRET_KEY = re.compile(
    r"token|secret|password|passwd|credential|authorization|api[_-]?key|private[_-]?key",
    re.IGNORECASE,
)
REDACTED = "***redacted***"


def secret_name(key: str) -> bool:
    """Whether a setting or variable named ``key`` holds a secret (a token, a password...)."""
    return _SECRET_KEY.search(key) is not None


def lock_key(tenant_id: str) -> str:
    """The text whose ``hashtextextended(..., 0)`` is the tenant's scan advisory lock."""
    return f"hubspot-loader:scan:{tenant_id}"


def ensure_schema(conn: psycopg2.extensions.connection) -> None:
    """Create ``loader.scan_jobs`` and its trigger if missing or outdated (one transaction)."""
    with conn, conn.cursor() as cur:
        if _schema_current(cur):
            return
        cur.execute("select pg_advisory_xact_lock(hashtextextended('hubspot-loader:ddl', 0))")
        if not _schema_current(cur):
            cur.execute(DDL)
            cur.execute("comment on table loader.scan_jobs is %s", (SCHEMA_MARKER,))


def table_exists(conn: psycopg2.extensions.connection) -> bool:
    """Whether ``loader.scan_jobs`` exists (readers need not create it)."""
    with conn, conn.cursor() as cur:
        cur.execute("select to_regclass('loader.scan_jobs') is not null")
        return bool(cur.fetchone()[0])


def _schema_current(cur: psycopg2.extensions.cursor) -> bool:
    cur.execute(
        "select obj_description(to_regclass('loader.scan_jobs'), 'pg_class') = %s",
        (SCHEMA_MARKER,),
    )
    row = cur.fetchone()
    return bool(row and row[0])


def redact(value: Any, key: str = "") -> Any:
    """``value`` with every secret replaced: values under secret-sounding keys (token, secret,
    password, authorization, api key...) and the password of any URL. Names of where a secret
    lives (``token_source``, ``token_env``) are kept: they are not secrets."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, key) for v in value]
    if key and secret_name(key) and not _names_a_source(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str) and "://" in value and "@" in value:
        return _redact_url(value)
    return value


def _names_a_source(key: str) -> bool:
    return key.lower() in ("token_source", "token_env", "token_secret")


def _redact_url(text: str) -> str:
    try:
        parts = urlsplit(text)
    except ValueError:
        return REDACTED
    if parts.password is None and not parts.username:
        return text
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{REDACTED}@{host}"))


def success_rate(total: int, failed: int) -> str:
    """The seed's formula: ``round((total - failed) * 100 / total, 2) || '%'``, else ``100%``."""
    if total <= 0:
        return "100%"
    value = round((total - failed) * 100.0 / total, 2)
    return f"{value:.2f}%"


def new_scan_id(tenant_id: str, now: datetime | None = None) -> str:
    """An external scan id that sorts by time and names its tenant."""
    now = now or datetime.now(UTC)
    return f"hubspot-deals-{tenant_id}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass
class ScanJob:
    """Identity of one scan job."""

    id: str
    scan_id: str
    tenant_id: str


def create(
    conn: psycopg2.extensions.connection,
    tenant_id: str,
    scan_type: str,
    config: dict[str, Any],
    batch_size: int,
    scan_id: str | None = None,
) -> ScanJob:
    """Insert a ``pending`` job and return it; ``config`` is stored redacted (:func:`redact`)."""
    job = ScanJob(id=str(uuid.uuid4()), scan_id=scan_id or new_scan_id(tenant_id),
                  tenant_id=tenant_id)
    with conn, conn.cursor() as cur:
        try:
            cur.execute(
                "insert into loader.scan_jobs (id, scan_id, status, scan_type, config, "
                "organization_id, batch_size) values (%s, %s, 'pending', %s, %s, %s, %s)",
                (job.id, job.scan_id, scan_type, json.dumps(redact(config), default=str),
                 tenant_id, batch_size),
            )
        except psycopg2.errors.UniqueViolation:
            raise LoaderError(f"scan id {job.scan_id!r} already exists") from None
    return job


def mark_running(conn: psycopg2.extensions.connection, job: ScanJob) -> str:
    """pending → running, stamping ``started_at``; return the status now (it may have been
    cancelled while pending)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "update loader.scan_jobs set status = 'running', started_at = now() "
            "where id = %s and status = 'pending'",
            (job.id,),
        )
    return current_status(conn, job)


@dataclass
class Queued:
    """A queued scan as :func:`enqueue` left it: its identity and the options it was asked for,
    and whether this call added it (False: the tenant's already queued scan was returned)."""

    job: ScanJob
    options: dict[str, Any]
    added: bool


def enqueue(
    conn: psycopg2.extensions.connection,
    tenant_id: str,
    options: dict[str, Any],
    batch_size: int,
    _attempts: int = 3,
) -> Queued:
    """Queue a scan of ``tenant_id`` for a worker (``pending``, type ``deals_queued``), with the
    scan ``options`` it should run with (stored in ``config``, redacted). A tenant has at most
    one queued scan: if it has one, that one is returned, made a full refresh if ``options``
    ask for one. The insert is announced on :data:`NOTIFY_CHANNEL` when it commits."""
    job = ScanJob(id=str(uuid.uuid4()), scan_id=new_scan_id(tenant_id), tenant_id=tenant_id)
    config = {**redact(options), "tenant_id": tenant_id, "queued": True}
    with conn, conn.cursor() as cur:
        cur.execute(
            "insert into loader.scan_jobs (id, scan_id, status, scan_type, config, "
            "organization_id, batch_size) values (%s, %s, 'pending', %s, %s, %s, %s) "
            "on conflict (organization_id) where status = 'pending' and scan_type = %s "
            "do nothing returning id",
            (job.id, job.scan_id, QUEUED_TYPE, json.dumps(config, default=str), tenant_id,
             batch_size, QUEUED_TYPE),
        )
        if cur.fetchone() is not None:
            return Queued(job, config, True)
        cur.execute(
            "update loader.scan_jobs set config = case when %s then "
            "jsonb_set(config, '{full_refresh}', 'true') else config end "
            "where organization_id = %s and status = 'pending' and scan_type = %s "
            "returning id, scan_id, config",
            (bool(options.get("full_refresh")), tenant_id, QUEUED_TYPE),
        )
        row = cur.fetchone()
    if row is None and _attempts > 1:  # started or cancelled in between: queue a new one
        return enqueue(conn, tenant_id, options, batch_size, _attempts - 1)
    if row is None:
        raise LoaderError(f"tenant {tenant_id}: could not queue a scan (its queued scans keep "
                          "starting as they are queued); try again")
    return Queued(ScanJob(id=row[0], scan_id=row[1], tenant_id=tenant_id), row[2], False)


def queued(
    conn: psycopg2.extensions.connection, *, exclude_tenants: Sequence[str] = (), limit: int = 100
) -> list[dict[str, Any]]:
    """Queued scans, oldest first (``id``, ``scan_id``, ``organization_id``, ``config``), leaving
    out ``exclude_tenants``."""
    with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(
            "select id, scan_id, organization_id, config, batch_size from loader.scan_jobs "
            "where status = 'pending' and scan_type = %s "
            "and not (organization_id = any(%s)) order by created_at limit %s",
            (QUEUED_TYPE, list(exclude_tenants), limit),
        )
        return [dict(r) for r in cur.fetchall()]


def claim(
    conn: psycopg2.extensions.connection,
    job_id: str,
    scan_type: str,
    config: dict[str, Any],
) -> tuple[ScanJob, str] | None:
    """Start a queued scan (call holding its tenant's lock): ``pending`` -> ``running`` as
    ``scan_type``, ``config`` merged into what ``submit`` stored (redacted). Returns the job and
    its status, ``cancelled`` if it was cancelled while queued; None if it is not queued (any
    more)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "update loader.scan_jobs set status = 'running', started_at = now(), scan_type = %s, "
            "config = config || %s::jsonb "
            "where id = %s and status = 'pending' and scan_type = %s "
            "returning scan_id, organization_id",
            (scan_type, json.dumps(redact(config), default=str), job_id, QUEUED_TYPE),
        )
        row = cur.fetchone()
        if row is None:
            cur.execute(
                "select scan_id, organization_id, status from loader.scan_jobs "
                "where id = %s and status = 'cancelled' and scan_type = %s",
                (job_id, QUEUED_TYPE),
            )
            cancelled = cur.fetchone()
            if cancelled is None:
                return None
            return ScanJob(job_id, cancelled[0], cancelled[1]), "cancelled"
    return ScanJob(job_id, row[0], row[1]), "running"


def set_total(conn: psycopg2.extensions.connection, job: ScanJob, total: int) -> None:
    """Record how many items the scan expects, as soon as HubSpot tells."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "update loader.scan_jobs set total_items = %s where id = %s", (max(total, 0), job.id)
        )


def set_progress(
    conn: psycopg2.extensions.connection, job: ScanJob, processed: int, failed: int
) -> str:
    """Store absolute progress counters; return the job's current status.

    Committed without waiting for the WAL flush: other sessions see the counters at once, and a
    server crash could only lose progress counters, which the scan's final write sets again.
    One statement in its own transaction, so one round trip (a scan writes this after every
    batch): ``set_config(..., true)`` switches the flush off for that transaction alone.
    """
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "update loader.scan_jobs set processed_items = %s, failed_items = %s, "
                "total_items = greatest(total_items, %s) "
                "where id = %s and set_config('synchronous_commit', 'off', true) = 'off' "
                "returning status",
                (processed, failed, processed + failed, job.id),
            )
            row = cur.fetchone()
    finally:
        conn.autocommit = autocommit
    return row[0] if row else "failed"


def current_status(conn: psycopg2.extensions.connection, job: ScanJob) -> str:
    """The job's status as stored now (another process may have cancelled it)."""
    with conn, conn.cursor() as cur:
        cur.execute("select status from loader.scan_jobs where id = %s", (job.id,))
        row = cur.fetchone()
    return row[0] if row else "failed"


def finish(
    conn: psycopg2.extensions.connection,
    job: ScanJob,
    status: str,
    error_message: str | None = None,
) -> str:
    """Move an active job to a terminal ``status``; return the status it ends with.

    A job already terminal (e.g. cancelled from another terminal) keeps its status; its counters
    and ``success_rate`` are still brought up to date.
    """
    assert status in TERMINAL
    with conn, conn.cursor() as cur:
        cur.execute(
            "update loader.scan_jobs set status = %s, completed_at = now(), error_message = %s, "
            "success_rate = case when total_items > 0 then "
            "round((total_items - failed_items) * 100.0 / total_items, 2)::text || '%%' "
            "else '100%%' end "
            "where id = %s and status in ('pending', 'running') returning status",
            (status, error_message, job.id),
        )
        row = cur.fetchone()
        if row is None:
            cur.execute(
                "update loader.scan_jobs set success_rate = case when total_items > 0 then "
                "round((total_items - failed_items) * 100.0 / total_items, 2)::text || '%%' "
                "else '100%%' end where id = %s returning status",
                (job.id,),
            )
            row = cur.fetchone()
    return row[0] if row else status


@dataclass
class CancelOutcome:
    """What ``cancel`` did: whether it changed the job, its status now, and its progress at that
    moment (the loader stops within one batch of it)."""

    changed: bool
    status: str
    processed_items: int
    total_items: int


def cancel(conn: psycopg2.extensions.connection, scan_id: str) -> CancelOutcome:
    """Cancel an active scan (the seed's control operation); a finished scan is left as it is."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "update loader.scan_jobs set status = 'cancelled', completed_at = now(), "
            "error_message = 'Cancelled by user' "
            "where scan_id = %s and status in ('pending', 'running') "
            "returning status, processed_items, total_items",
            (scan_id,),
        )
        row = cur.fetchone()
        if row:
            return CancelOutcome(True, row[0], row[1], row[2])
        cur.execute(
            "select status, processed_items, total_items from loader.scan_jobs "
            "where scan_id = %s",
            (scan_id,),
        )
        row = cur.fetchone()
    if row is None:
        raise LoaderError(f"no scan with id {scan_id!r}")
    return CancelOutcome(False, row[0], row[1], row[2])


def fail_interrupted(conn: psycopg2.extensions.connection, tenant_id: str) -> list[str]:
    """Mark the tenant's started jobs failed ("interrupted"); call only holding its scan lock.
    A queued job (``deals_queued``) is no loader's yet: it stays queued."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "update loader.scan_jobs set status = 'failed', completed_at = now(), "
            "error_message = 'interrupted: the loader process stopped before the scan finished' "
            "where organization_id = %s and (status = 'running' or "
            "(status = 'pending' and scan_type <> %s)) returning scan_id",
            (tenant_id, QUEUED_TYPE),
        )
        return [r[0] for r in cur.fetchall()]


def get(conn: psycopg2.extensions.connection, scan_id: str) -> dict[str, Any]:
    """One job as a dict, by external ``scan_id`` (or internal ``id``)."""
    with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(
            f"select {COLUMNS}, {_ALIVE} from loader.scan_jobs where scan_id = %s or id = %s",
            (scan_id, scan_id),
        )
        row = cur.fetchone()
    if row is None:
        raise LoaderError(f"no scan with id {scan_id!r}")
    return dict(row)


def get_many(conn: psycopg2.extensions.connection, job_ids: list[str]) -> list[dict[str, Any]]:
    """The jobs of ``job_ids`` (internal ids), in that order, in one query (``submit --wait``
    looks at all of them each time one changes)."""
    with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(f"select {COLUMNS}, {_ALIVE} from loader.scan_jobs where id = any(%s)",
                    (list(job_ids),))
        rows = {row["id"]: dict(row) for row in cur.fetchall()}
    missing = [job_id for job_id in job_ids if job_id not in rows]
    if missing:
        raise LoaderError(f"no scan with id {missing[0]!r}")
    return [rows[job_id] for job_id in job_ids]


def list_jobs(
    conn: psycopg2.extensions.connection,
    *,
    active: bool = False,
    tenant_id: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Jobs newest first, optionally only active ones and/or one tenant's."""
    where, params = [], []
    if active:
        where.append("status in ('pending', 'running')")
    if tenant_id:
        where.append("organization_id = %s")
        params.append(tenant_id)
    sql = f"select {COLUMNS}, {_ALIVE} from loader.scan_jobs"
    if where:
        sql += " where " + " and ".join(where)
    sql += " order by created_at desc limit %s"
    params.append(limit)
    with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(sql, params)
        return [dict(r) for r in cur.fetchall()]
