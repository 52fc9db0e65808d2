"""Raw rows as the loader lands them (raw_hubspot.* and loader.scan_jobs), written with SQL.

The tables have the columns the loader's dlt pipelines create and the staging models read.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2.extensions

from loader import scan_jobs

RAW_DDL = """
create schema if not exists raw_hubspot;
create table if not exists raw_hubspot.deals (
    id varchar not null, properties jsonb, created_at timestamptz, updated_at timestamptz not null,
    archived boolean, archived_at timestamptz, _tenant_id varchar not null,
    _scan_id varchar not null, _scan_job_id varchar not null,
    _extracted_at timestamptz not null, _dlt_load_id varchar not null default 'test',
    _dlt_id varchar not null unique
);
create table if not exists raw_hubspot.deals_stage_history (
    value varchar, changed_at timestamptz, source_type varchar, _dlt_root_id varchar not null,
    _dlt_parent_id varchar not null, _dlt_list_idx bigint not null, _dlt_id varchar not null unique
);
create table if not exists raw_hubspot.pipelines (
    id varchar not null, _tenant_id varchar not null, _scan_id varchar not null,
    _scan_job_id varchar not null, _extracted_at timestamptz not null, label varchar,
    display_order bigint, archived boolean, _dlt_load_id varchar not null default 'test',
    _dlt_id varchar not null unique
);
create table if not exists raw_hubspot.pipelines__stages (
    id varchar, label varchar, display_order bigint, archived boolean, probability varchar,
    is_closed varchar, _dlt_root_id varchar not null, _dlt_parent_id varchar not null,
    _dlt_list_idx bigint not null, _dlt_id varchar not null unique
);
create table if not exists raw_hubspot.deals_rejected (
    deal_id varchar, reason varchar, payload jsonb, _tenant_id varchar not null,
    _scan_id varchar not null, _scan_job_id varchar not null, _extracted_at timestamptz not null,
    _dlt_load_id varchar not null default 'test', _dlt_id varchar not null unique
);
"""

#: The portal's pipelines: the default one and a custom one with numeric stage ids.
PIPELINES: dict[str, tuple[str, list[tuple[str, str, str, str]]]] = {
    "default": ("Sales Pipeline", [
        ("appointmentscheduled", "Appointment Scheduled", "0.2", "false"),
        ("contractsent", "Contract Sent", "0.9", "false"),
        ("closedwon", "Closed Won", "1.0", "true"),
        ("closedlost", "Closed Lost", "0.0", "true"),
    ]),
    "777": ("Renewals", [
        ("1001", "Discovery", "0.1", "false"),
        ("1002", "Renewed", "1.0", "true"),
    ]),
}

_ids = itertools.count(1)


def _dlt_id() -> str:
    return f"dlt{next(_ids):011d}"


def create_raw_tables(conn: psycopg2.extensions.connection) -> None:
    scan_jobs.ensure_schema(conn)
    with conn.cursor() as cur:
        cur.execute(RAW_DDL)
    conn.commit()


def scanned(conn: psycopg2.extensions.connection, jobs: dict[str, str],
            extracted_at: datetime) -> psycopg2.extensions.connection:
    """The raw tables, then for each ``{job_id: tenant}`` a finished scan job with the
    tenant's pipelines extracted at ``extracted_at``; returns ``conn`` for the deals."""
    create_raw_tables(conn)
    for job_id, tenant in jobs.items():
        add_scan_job(conn, job_id, tenant)
        add_pipelines(conn, job_id, tenant, extracted_at)
    return conn


def one_scanned_deal(conn: psycopg2.extensions.connection, extracted_at: datetime) -> None:
    """The raw tables and one deal ("1") of a finished scan ("job-1") of tenant acme, extracted
    at ``extracted_at``; closes ``conn``."""
    scanned(conn, {"job-1": "acme"}, extracted_at)
    add_deal(conn, "job-1", "acme", "1", extracted_at, extracted_at)
    conn.close()


def add_scan_job(conn: psycopg2.extensions.connection, job_id: str, tenant: str, *,
                 status: str = "completed", completed_days_ago: float = 0,
                 failed_items: int = 0, total_items: int = 10) -> str:
    """A scan job record; returns its scan_id (``scan-<job_id>``)."""
    finished = datetime.now(UTC) - timedelta(days=completed_days_ago)
    terminal = status in scan_jobs.TERMINAL
    with conn.cursor() as cur:
        cur.execute(
            "insert into loader.scan_jobs (id, scan_id, status, scan_type, config, "
            "organization_id, started_at, completed_at, total_items, processed_items, "
            "failed_items, created_at, updated_at) values (%s, %s, %s, 'deals_full', '{}', %s, "
            "%s, %s, %s, %s, %s, %s, %s)",
            (job_id, f"scan-{job_id}", status, tenant, finished - timedelta(minutes=5),
             finished if terminal else None, total_items, total_items - failed_items,
             failed_items, finished - timedelta(minutes=5), finished),
        )
    conn.commit()
    return f"scan-{job_id}"


def finish_scan_job(conn: psycopg2.extensions.connection, job_id: str) -> None:
    with conn.cursor() as cur:
        cur.execute("update loader.scan_jobs set status = 'completed' where id = %s", (job_id,))
    conn.commit()


def add_pipelines(conn: psycopg2.extensions.connection, job_id: str, tenant: str,
                  extracted_at: datetime) -> None:
    with conn.cursor() as cur:
        for order, (pipeline_id, (label, stages)) in enumerate(PIPELINES.items()):
            parent = _dlt_id()
            cur.execute(
                "insert into raw_hubspot.pipelines (id, _tenant_id, _scan_id, _scan_job_id, "
                "_extracted_at, label, display_order, archived, _dlt_id) "
                "values (%s, %s, %s, %s, %s, %s, %s, false, %s)",
                (pipeline_id, tenant, f"scan-{job_id}", job_id, extracted_at, label, order,
                 parent),
            )
            for index, (stage_id, stage_label, probability, closed) in enumerate(stages):
                cur.execute(
                    "insert into raw_hubspot.pipelines__stages (id, label, display_order, "
                    "archived, probability, is_closed, _dlt_root_id, _dlt_parent_id, "
                    "_dlt_list_idx, _dlt_id) values (%s, %s, %s, false, %s, %s, %s, %s, %s, %s)",
                    (stage_id, stage_label, index, probability, closed, parent, parent, index,
                     _dlt_id()),
                )
    conn.commit()


def add_deal(conn: psycopg2.extensions.connection, job_id: str, tenant: str, deal_id: str,
             extracted_at: datetime, updated_at: datetime, *, archived: bool = False,
             history: list[tuple[str, datetime]] | None = None, **properties: Any) -> str:
    """One raw deal version; ``properties`` are HubSpot's strings (defaults filled in)."""
    props = {"pipeline": "default", "dealstage": "appointmentscheduled",
             "dealname": f"deal {deal_id}", "amount": "100",
             "createdate": "2024-01-15T10:00:00.000Z", "hs_lastmodifieddate":
             updated_at.isoformat().replace("+00:00", "Z")}
    props.update(properties)
    row_id = _dlt_id()
    with conn.cursor() as cur:
        cur.execute(
            "insert into raw_hubspot.deals (id, properties, created_at, updated_at, archived, "
            "_tenant_id, _scan_id, _scan_job_id, _extracted_at, _dlt_id) "
            "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (deal_id, json.dumps(props), datetime(2024, 1, 15, 10, tzinfo=UTC), updated_at,
             archived, tenant, f"scan-{job_id}", job_id, extracted_at, row_id),
        )
        for index, (stage, changed_at) in enumerate(history or []):
            cur.execute(
                "insert into raw_hubspot.deals_stage_history (value, changed_at, source_type, "
                "_dlt_root_id, _dlt_parent_id, _dlt_list_idx, _dlt_id) "
                "values (%s, %s, 'CRM_UI', %s, %s, %s, %s)",
                (stage, changed_at, row_id, row_id, index, _dlt_id()),
            )
    conn.commit()
    return row_id


def add_rejected(conn: psycopg2.extensions.connection, job_id: str, tenant: str,
                 extracted_at: datetime, payload: dict[str, Any], reason: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "insert into raw_hubspot.deals_rejected (deal_id, reason, payload, _tenant_id, "
            "_scan_id, _scan_job_id, _extracted_at, _dlt_id) "
            "values (%s, %s, %s, %s, %s, %s, %s, %s)",
            (payload.get("id"), reason, json.dumps(payload), tenant, f"scan-{job_id}", job_id,
             extracted_at, _dlt_id()),
        )
    conn.commit()
