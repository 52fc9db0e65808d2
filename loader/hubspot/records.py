"""Turn HubSpot deal objects into raw rows stamped with tenant, scan and extraction time.

A batch of deals becomes Arrow tables (:func:`deal_batch`), which the source writes to csv job
files for dlt to import (``_Spool`` in this package): no per-row normalisation by dlt, which
cost more than a third of a scan's CPU when the rows were Python dicts. The tables have the
columns dlt's own unnesting gave the raw tables: ``deals`` with ``properties`` kept whole as one
JSON value and a ``_dlt_id`` per row, and the stage history as ``deals_stage_history`` rows
pointing at their deal's ``_dlt_id`` (``_dlt_parent_id``, ``_dlt_root_id``) with their place in
the list (``_dlt_list_idx``).
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa

from . import settings

#: The raw tables' timestamps: microseconds, UTC (``timestamp with time zone`` in PostgreSQL).
TIMESTAMP = pa.timestamp("us", tz="UTC")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
ONE_US = timedelta(microseconds=1)

_STAMP_FIELDS = [
    pa.field("_tenant_id", pa.string(), nullable=False),
    pa.field("_scan_id", pa.string(), nullable=False),
    pa.field("_scan_job_id", pa.string(), nullable=False),
    pa.field("_extracted_at", TIMESTAMP, nullable=False),
]

DEALS_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("properties", pa.string()),
    pa.field("created_at", TIMESTAMP),
    pa.field("updated_at", TIMESTAMP, nullable=False),
    pa.field("archived", pa.bool_()),
    pa.field("archived_at", TIMESTAMP),
    *_STAMP_FIELDS,
    pa.field("_dlt_id", pa.string(), nullable=False),
])

STAGE_HISTORY_SCHEMA = pa.schema([
    pa.field("value", pa.string()),
    pa.field("changed_at", TIMESTAMP),
    pa.field("source_type", pa.string()),
    pa.field("_dlt_root_id", pa.string(), nullable=False),
    pa.field("_dlt_parent_id", pa.string(), nullable=False),
    pa.field("_dlt_list_idx", pa.int64(), nullable=False),
    pa.field("_dlt_id", pa.string(), nullable=False),
])

#: JSON's escape for U+0000, which PostgreSQL's ``jsonb`` (and ``text``) cannot store.
_NUL_ESCAPE = b"\\u0000"
NUL_REASON = "contains a NUL character (\\u0000), which PostgreSQL cannot store"


_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
#: The same 64 digits in ASCII order, so that the encoded ids sort as their bytes do.
_SORTABLE = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_TO_SORTABLE = bytes.maketrans(_BASE64, _SORTABLE)


def row_ids(n: int) -> list[str]:
    """``n`` unique row ids (``_dlt_id``) that increase with time: 20 characters encoding the
    microsecond clock (7 bytes), 5 random bytes per call and a 3-byte counter.

    dlt's own ids are random; with them every row of a load lands on a random page of the
    ``_dlt_id`` unique index, and COPY into the stage history took twice as long (600,000 rows:
    2.5 s against 1.2-1.4 s with these, which all go to the index's right edge).
    """
    head = (time.time_ns() // 1000).to_bytes(7, "big") + secrets.token_bytes(5)
    raw = b"".join(head + i.to_bytes(3, "big") for i in range(n))
    text = base64.b64encode(raw).translate(_TO_SORTABLE).decode("ascii")
    return [text[k:k + 20] for k in range(0, 20 * n, 20)]


def parse_hubspot_ms(value: Any) -> int | None:
    """Epoch milliseconds from an ISO-8601 string (``...Z``, with or without ms) or epoch ms."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return int(value)
    text = str(value)
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return epoch_ms(parsed)


def epoch_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware ``datetime``, exactly (rounded down to the ms).

    ``int(moment.timestamp() * 1000)`` goes through a float and came out 1 ms early for about
    one time in a hundred before 2017 or after 2030 (``2004-09-30T13:38:11.616Z`` gave
    ``...615``)."""
    return (moment - EPOCH) // ONE_MS


def epoch_us(moment: datetime) -> int:
    """Epoch microseconds of an aware ``datetime``, exactly."""
    return (moment - EPOCH) // ONE_US


def parse_hubspot_datetime(value: Any) -> datetime | None:
    """A UTC ``datetime`` from HubSpot's ISO-8601 or epoch-ms value; ``None`` if absent/invalid."""
    ms = parse_hubspot_ms(value)
    if ms is None:
        return None
    return EPOCH + ms * ONE_MS


def _micros(value: Any) -> int | None:
    ms = parse_hubspot_ms(value)
    return None if ms is None else ms * 1000


@dataclass
class Stamp:
    """Who extracted a row and when: the columns every raw row carries."""

    tenant_id: str
    scan_id: str
    scan_job_id: str
    extracted_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def columns(self, n: int) -> list[pa.Array]:
        return [
            pa.repeat(pa.scalar(self.tenant_id, pa.string()), n),
            pa.repeat(pa.scalar(self.scan_id, pa.string()), n),
            pa.repeat(pa.scalar(self.scan_job_id, pa.string()), n),
            pa.repeat(pa.scalar(self.extracted_at, TIMESTAMP), n),
        ]

    def row(self) -> dict[str, Any]:
        return {
            "_tenant_id": self.tenant_id,
            "_scan_id": self.scan_id,
            "_scan_job_id": self.scan_job_id,
            "_extracted_at": self.extracted_at,
        }


@dataclass
class DealBatch:
    """One batch of deals as raw tables, with what could not be stored."""

    deals: pa.Table
    stage_history: pa.Table | None
    #: ``deals_rejected`` rows: each record kept whole with the reason.
    rejected: list[dict[str, Any]]
    #: The latest ``updated_at`` among the batch's deals, stored or kept as rejected (epoch µs).
    max_updated_us: int | None

    @property
    def stored(self) -> int:
        return self.deals.num_rows


def deal_problem(deal: Any, updated_us: int | None) -> str | None:
    """Why a deal object cannot be stored, or None if it can (``updated_us``: its
    :func:`_updated_us`)."""
    if not isinstance(deal, dict):
        return "not a JSON object"
    deal_id = deal.get("id")
    if not isinstance(deal_id, str) or not deal_id.strip() or len(deal_id) > 50:
        return "missing or invalid 'id'"
    properties = deal.get("properties")
    if not isinstance(properties, dict):
        return "missing 'properties' object"
    if updated_us is None:
        return "missing or unparseable 'updatedAt'"
    if "\x00" in deal_id:
        return NUL_REASON
    return None


def _updated_us(deal: Any) -> int | None:
    """When HubSpot last changed the deal (epoch µs), or None if it does not say."""
    if not isinstance(deal, dict):
        return None
    properties = deal.get("properties")
    fallback = properties.get(settings.CURSOR_PROPERTY) if isinstance(properties, dict) else None
    return _micros(deal.get("updatedAt") or fallback)


def deal_batch(deals: list[Any], stamp: Stamp) -> DealBatch:
    """The raw rows of ``deals`` (one page or part of one) as Arrow tables.

    ``properties`` is kept whole as one JSON value; a deal with a NUL character anywhere in it is
    rejected (PostgreSQL cannot store one) and kept in ``deals_rejected`` with the NULs replaced.
    The stage history, where HubSpot sent it, becomes ``deals_stage_history`` rows.
    """
    ids: list[str] = []
    blobs: list[bytes] = []
    created: list[int | None] = []
    updated: list[int] = []
    archived: list[bool] = []
    archived_at: list[int | None] = []
    histories: list[list[Any] | None] = []
    rejected: list[dict[str, Any]] = []
    rejected_updated: list[int] = []
    for deal in deals:
        updated_us = _updated_us(deal)
        reason = deal_problem(deal, updated_us)
        blob = b""
        if reason is None:
            blob = orjson.dumps(deal["properties"])
            if _NUL_ESCAPE in blob:
                reason = NUL_REASON
        if reason is not None:
            rejected.append(rejected_row(deal, reason, stamp))
            if updated_us is not None:
                rejected_updated.append(updated_us)  # kept: the cursor may pass it
            continue
        ids.append(deal["id"])
        blobs.append(blob)
        created.append(_micros(deal.get("createdAt")))
        updated.append(updated_us)
        archived.append(bool(deal.get("archived", False)))
        archived_at.append(_micros(deal.get("archivedAt")))
        history = (deal.get("propertiesWithHistory") or {}).get(settings.STAGE_PROPERTY)
        histories.append(history if isinstance(history, list) else None)
    n = len(ids)
    deal_row_ids = row_ids(n)
    table = pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array(blobs, pa.string()),
            pa.array(created, TIMESTAMP),
            pa.array(updated, TIMESTAMP),
            pa.array(archived, pa.bool_()),
            pa.array(archived_at, TIMESTAMP),
            *stamp.columns(n),
            pa.array(deal_row_ids, pa.string()),
        ],
        schema=DEALS_SCHEMA,
    )
    return DealBatch(
        deals=table,
        stage_history=_stage_history(deal_row_ids, histories),
        rejected=rejected,
        max_updated_us=max([*updated, *rejected_updated], default=None),
    )


def _stage_history(deal_row_ids: list[str], histories: list[list[Any] | None]
                   ) -> pa.Table | None:
    """``deals_stage_history`` rows for the deals that came with a history (None if none did)."""
    values: list[Any] = []
    changed: list[int | None] = []
    sources: list[Any] = []
    parents: list[str] = []
    positions: list[int] = []
    for row_id, history in zip(deal_row_ids, histories, strict=True):
        if not history:
            continue
        position = 0
        for entry in history:
            if not isinstance(entry, dict):
                continue
            changed.append(_micros(entry.get("timestamp")))
            values.append(_text(entry.get("value")))
            sources.append(_text(entry.get("sourceType")))
            parents.append(row_id)
            positions.append(position)
            position += 1
    if not parents:
        return None
    parent_ids = pa.array(parents, pa.string())
    return pa.Table.from_arrays(
        [
            pa.array(values, pa.string()),
            pa.array(changed, TIMESTAMP),
            pa.array(sources, pa.string()),
            parent_ids,
            parent_ids,
            pa.array(positions, pa.int64()),
            pa.array(row_ids(len(parents)), pa.string()),
        ],
        schema=STAGE_HISTORY_SCHEMA,
    )


def _text(value: Any) -> str | None:
    """A history field as text (NUL, which PostgreSQL cannot store, as U+FFFD)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def rejected_row(deal: Any, reason: str, stamp: Stamp) -> dict[str, Any]:
    """A record we could not store, kept whole with the reason (table ``deals_rejected``).

    NUL characters, which PostgreSQL cannot store, are replaced by U+FFFD in the kept copy.
    """
    dumped = orjson.dumps(deal)
    if _NUL_ESCAPE in dumped:
        deal = orjson.loads(dumped.replace(_NUL_ESCAPE, b"\\ufffd"))
    deal_id = deal.get("id") if isinstance(deal, dict) else None
    return {
        "deal_id": str(deal_id)[:255] if deal_id is not None else None,
        "reason": reason,
        "payload": deal,
        **stamp.row(),
    }
