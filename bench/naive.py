"""The naive reference loader: what anyone would write by hand in an afternoon.

One tenant, one request at a time with ``requests``, the same list pages as the loader (every
property, ``propertiesWithHistory=dealstage``, 50 per page), ``json.loads``, and one ``INSERT``
per deal and per stage-history entry, committed per page. It runs on a subset of the deals and
its rate is extrapolated to the full size (the output says so).
"""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from .harness import BenchEnv, token_of

DDL = """
drop schema if exists bench_naive cascade;
create schema bench_naive;
create table bench_naive.deals (
    id text not null,
    tenant_id text not null,
    properties jsonb,
    created_at timestamptz,
    updated_at timestamptz,
    archived boolean,
    archived_at timestamptz,
    extracted_at timestamptz not null default now()
);
create table bench_naive.deal_stage_history (
    deal_id text not null,
    tenant_id text not null,
    value text,
    changed_at timestamptz,
    source_type text
);
"""


def naive_reference(env: BenchEnv, base_url: str, tenant: str, max_deals: int
                    ) -> dict[str, Any]:
    """Load up to ``max_deals`` deals of ``tenant`` the naive way; its rate in deals/s."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token_of(tenant)}"
    conn = env.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute(DDL)
        conn.commit()
        started = time.perf_counter()
        props = session.get(f"{base_url}/crm/v3/properties/deals").json()["results"]
        names = ",".join(p["name"] for p in props)
        deals = requests_made = 0
        after = None
        while deals < max_deals:
            params = {"limit": 50, "archived": "false", "properties": names,
                      "propertiesWithHistory": "dealstage"}
            if after:
                params["after"] = after
            response = session.get(f"{base_url}/crm/v3/objects/deals", params=params)
            response.raise_for_status()
            page = json.loads(response.text)
            requests_made += 1
            with conn.cursor() as cur:
                for deal in page["results"]:
                    cur.execute(
                        "insert into bench_naive.deals (id, tenant_id, properties, created_at, "
                        "updated_at, archived, archived_at) values (%s, %s, %s, %s, %s, %s, %s)",
                        (deal["id"], tenant, json.dumps(deal["properties"]), deal.get("createdAt"),
                         deal.get("updatedAt"), deal.get("archived", False),
                         deal.get("archivedAt")),
                    )
                    history = (deal.get("propertiesWithHistory") or {}).get("dealstage") or []
                    for entry in history:
                        cur.execute(
                            "insert into bench_naive.deal_stage_history (deal_id, tenant_id, "
                            "value, changed_at, source_type) values (%s, %s, %s, %s, %s)",
                            (deal["id"], tenant, entry.get("value"), entry.get("timestamp"),
                             entry.get("sourceType")),
                        )
                    deals += 1
            conn.commit()
            after = ((page.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                break
        seconds = time.perf_counter() - started
        with conn.cursor() as cur:
            cur.execute("drop schema bench_naive cascade")
        conn.commit()
    finally:
        conn.close()
    return {
        "deals": deals,
        "requests": requests_made,
        "seconds": round(seconds, 3),
        "deals_per_s": round(deals / seconds, 1),
        "method": "sequential requests (one tenant), json.loads, one INSERT per row, "
                  "commit per page",
    }
