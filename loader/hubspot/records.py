"""Turn HubSpot deal objects into raw rows stamped with tenant, scan and extraction time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from . import settings


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
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def parse_hubspot_datetime(value: Any) -> datetime | None:
    """A UTC ``datetime`` from HubSpot's ISO-8601 or epoch-ms value; ``None`` if absent/invalid."""
    ms = parse_hubspot_ms(value)
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def deal_row(
    deal: dict[str, Any], tenant_id: str, scan_id: str, scan_job_id: str, extracted_at: datetime
) -> tuple[dict[str, Any] | None, str | None]:
    """Return ``(row, None)`` for a storable deal or ``(None, reason)`` for one we cannot store.

    ``properties`` is kept whole as one JSON value; the stage history, when HubSpot sent it,
    becomes the nested ``stage_history`` list (dlt's child table ``deals__stage_history``).
    """
    deal_id = deal.get("id")
    if not isinstance(deal_id, str) or not deal_id.strip() or len(deal_id) > 50:
        return None, "missing or invalid 'id'"
    properties = deal.get("properties")
    if not isinstance(properties, dict):
        return None, "missing 'properties' object"
    updated_at = parse_hubspot_datetime(
        deal.get("updatedAt") or properties.get(settings.CURSOR_PROPERTY)
    )
    if updated_at is None:
        return None, "missing or unparseable 'updatedAt'"
    row: dict[str, Any] = {
        "id": deal_id,
        "properties": properties,
        "created_at": parse_hubspot_datetime(deal.get("createdAt")),
        "updated_at": updated_at,
        "archived": bool(deal.get("archived", False)),
        "archived_at": parse_hubspot_datetime(deal.get("archivedAt")),
        "_tenant_id": tenant_id,
        "_scan_id": scan_id,
        "_scan_job_id": scan_job_id,
        "_extracted_at": extracted_at,
    }
    history = (deal.get("propertiesWithHistory") or {}).get(settings.STAGE_PROPERTY)
    if isinstance(history, list):
        row["stage_history"] = [
            {
                "value": h.get("value"),
                "changed_at": parse_hubspot_datetime(h.get("timestamp")),
                "source_type": h.get("sourceType"),
            }
            for h in history
            if isinstance(h, dict)
        ]
    return row, None


def rejected_row(
    deal: Any, reason: str, tenant_id: str, scan_id: str, scan_job_id: str, extracted_at: datetime
) -> dict[str, Any]:
    """A record we could not store, kept whole with the reason (table ``deals_rejected``)."""
    deal_id = deal.get("id") if isinstance(deal, dict) else None
    return {
        "deal_id": str(deal_id)[:255] if deal_id is not None else None,
        "reason": reason,
        "payload": deal,
        "_tenant_id": tenant_id,
        "_scan_id": scan_id,
        "_scan_job_id": scan_job_id,
        "_extracted_at": extracted_at,
    }
