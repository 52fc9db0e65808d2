"""Independent Python statements of how HubSpot values should land in analytics.deals.

Tests compare the warehouse against these, computed from what the sandbox serves over HTTP.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import requests

_NUMBER = re.compile(r"^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,3})?$")


def expected_amount(value: str | None) -> Decimal | None:
    if value is None or not _NUMBER.match(value.strip()):
        return None
    try:
        number = Decimal(value.strip()).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return None
    return number if abs(number) < Decimal("1e13") else None


def expected_timestamp(value: str | None) -> datetime | None:
    """Naive UTC datetime, as stored in ``timestamp`` columns."""
    if not value:
        return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return datetime.fromisoformat(value)
    if value.isdigit():
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC).replace(tzinfo=None)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(UTC).replace(tzinfo=None)


def expected_text(value: str | None) -> str | None:
    return value if value not in (None, "") else None


def fetch_all_deals(base_url: str, token: str, *, archived: bool = False) -> list[dict[str, Any]]:
    """Every deal the sandbox serves for a portal, with every property, via the public API."""
    headers = {"Authorization": f"Bearer {token}"}
    names = [p["name"] for p in requests.get(
        f"{base_url}/crm/v3/properties/deals", headers=headers, timeout=30).json()["results"]]
    wanted = [n for n in names if not n.startswith("custom_")][:60]
    deals: list[dict[str, Any]] = []
    after = None
    while True:
        params: list[tuple[str, str]] = [("limit", "100"), ("archived", str(archived).lower())]
        params += [("properties", ",".join(wanted))]
        if after:
            params.append(("after", after))
        payload = requests.get(f"{base_url}/crm/v3/objects/deals", params=params,
                               headers=headers, timeout=30).json()
        deals.extend(payload["results"])
        after = (payload.get("paging") or {}).get("next", {}).get("after")
        if not after:
            return deals
