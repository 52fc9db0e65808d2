"""The two ceilings the loader is measured against.

Source: the sandbox's pages fetched by a bare asyncio HTTP client — the loader's own requests
(list endpoint with every property, the same page size and ``propertiesWithHistory``, the archived
list, properties, pipelines, the count search), one sequential cursor walk per tenant as the API
requires, all tenants at once — parsed just enough to follow the cursor, then thrown away.

Sink: the rows the full scan landed, exported and loaded again by PostgreSQL ``COPY`` into
equivalent tables (``LIKE ... INCLUDING ALL``), one connection per tenant at once.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from .harness import BenchEnv, token_of

DEALS_PATH = "/crm/v3/objects/deals"


def _loader_settings() -> tuple[int, int, tuple[str, ...], str]:
    """Page sizes and required properties as the loader uses them (defaults if renamed)."""
    from loader.hubspot import settings as hs

    return (
        int(getattr(hs, "LIST_PAGE_SIZE", 100)),
        int(getattr(hs, "HISTORY_PAGE_SIZE", 50)),
        tuple(getattr(hs, "REQUIRED_PROPERTIES", ())),
        str(getattr(hs, "STAGE_PROPERTY", "dealstage")),
    )


async def _get(session: aiohttp.ClientSession, url: str, token: str) -> dict[str, Any]:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        body = await response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {url[:120]} answered {response.status}: {body[:200]!r}")
    return orjson.loads(body)


async def _walk_tenant(session: aiohttp.ClientSession, base: str, tenant: str,
                       stage_history: bool) -> tuple[int, int]:
    list_size, history_size, required, stage = _loader_settings()
    token = token_of(tenant)
    requests = 0
    props = await _get(session, f"{base}/crm/v3/properties/deals?archived=false", token)
    requests += 1
    names = list(dict.fromkeys([*required, *(p["name"] for p in props["results"])]))
    async with session.post(f"{base}{DEALS_PATH}/search",
                            data=orjson.dumps({"limit": 1, "properties": ["hs_object_id"]}),
                            headers={"Authorization": f"Bearer {token}",
                                     "Content-Type": "application/json"}) as response:
        await response.read()
    await _get(session, f"{base}/crm/v3/pipelines/deals", token)
    requests += 2
    deals = 0
    for archived in (False, True):
        fixed: list[tuple[str, str]] = [
            ("limit", str(history_size if stage_history and not archived else list_size)),
            ("archived", str(archived).lower()),
        ]
        if stage_history and not archived:
            fixed.append(("propertiesWithHistory", stage))
        fixed.append(("properties", ",".join(names)))
        after: str | None = None
        while True:
            query = fixed + ([("after", after)] if after else [])
            page = await _get(session, f"{base}{DEALS_PATH}?{urlencode(query)}", token)
            requests += 1
            deals += len(page["results"])
            after = ((page.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                break
    return deals, requests


async def _source(base: str, tenants: list[str], stage_history: bool) -> tuple[int, int, float]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(_walk_tenant(session, base, t, stage_history) for t in tenants))
        seconds = time.perf_counter() - started
    return sum(r[0] for r in results), sum(r[1] for r in results), seconds


def source_ceiling(base_url: str, tenants: list[str], *, stage_history: bool = True
                   ) -> dict[str, Any]:
    """Fetch every page the loader's full scan fetches, as fast as a bare client can."""
    deals, requests, seconds = asyncio.run(_source(base_url, tenants, stage_history))
    return {
        "deals": deals,
        "requests": requests,
        "seconds": round(seconds, 3),
        "deals_per_s": round(deals / seconds, 1),
        "client": f"aiohttp, one cursor walk per tenant, {len(tenants)} at once",
    }


def _copy_tables(env: BenchEnv) -> list[tuple[str, str, str]]:
    """(raw table, sink table, tenant filter) for the deals table and the stage history."""
    with env.cursor() as cur:
        cur.execute(
            "select table_name from information_schema.tables "
            "where table_schema = 'raw_hubspot' and (table_name = 'deals' "
            "or table_name = 'deals_stage_history') order by table_name"
        )
        names = [r[0] for r in cur.fetchall()]
    out = []
    for name in names:
        where = ("_tenant_id = %(tenant)s" if name == "deals" else
                 "_dlt_root_id in (select _dlt_id from raw_hubspot.deals "
                 "where _tenant_id = %(tenant)s)")
        out.append((f"raw_hubspot.{name}", f"bench_sink.{name}", where))
    return out


def sink_ceiling(env: BenchEnv, tenants: list[str]) -> dict[str, Any]:
    """COPY the rows the full scan landed for ``tenants`` into equivalent tables, timed."""
    tables = _copy_tables(env)
    with env.cursor() as cur:
        cur.execute("drop schema if exists bench_sink cascade; create schema bench_sink")
        for raw, sink, _ in tables:
            cur.execute(f"create table {sink} (like {raw} including all)")
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as tmp:
        files: dict[str, list[tuple[str, Path]]] = {t: [] for t in tenants}
        deals = rows = size = 0
        with env.cursor() as cur:
            for tenant in tenants:
                for raw, sink, where in tables:
                    path = Path(tmp) / f"{tenant}-{raw}.csv"
                    query = cur.mogrify(f"select * from {raw} where {where}",
                                        {"tenant": tenant}).decode()
                    with open(path, "wb") as out:
                        cur.copy_expert(f"copy ({query}) to stdout with (format csv)", out)
                    files[tenant].append((sink, path))
                    size += path.stat().st_size
            cur.execute("select count(*) from raw_hubspot.deals where _tenant_id = any(%s)",
                        (tenants,))
            deals = int(cur.fetchone()[0])

        def load(tenant: str) -> int:
            loaded = 0
            with env.cursor(autocommit=False) as cur:
                for sink, path in files[tenant]:
                    with open(path, "rb") as source:
                        cur.copy_expert(f"copy {sink} from stdin with (format csv)", source)
                    loaded += cur.rowcount
            return loaded

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(tenants)) as pool:
            rows = sum(pool.map(load, tenants))
        seconds = time.perf_counter() - started
    with env.cursor() as cur:
        cur.execute("drop schema bench_sink cascade")
    return {
        "deals": deals,
        "rows": rows,
        "megabytes": round(size / 1024 / 1024, 1),
        "seconds": round(seconds, 3),
        "deals_per_s": round(deals / seconds, 1),
        "method": f"COPY ... FROM STDIN (csv), {len(tenants)} connections at once, "
                  "deals and stage history, same columns and indexes",
    }
