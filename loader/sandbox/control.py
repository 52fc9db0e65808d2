"""Unauthenticated control endpoints under ``/_sandbox/`` (see README.md), so a process that
did not start the server can change data, set faults and rate limits, and read counters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from loader.sandbox.errors import ApiError
from loader.sandbox.portal import Portal

if TYPE_CHECKING:
    from loader.sandbox.server import SandboxState

STATE_KEY: web.AppKey[SandboxState] = web.AppKey("sandbox_state")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status,
                        content_type="application/json")


def _guard(fn: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Handler:
    """Map bad input to 400, unknown tenants/deals to 404, with ``{"error": ...}`` bodies."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except KeyError as exc:
            return _json({"error": f"not found: {exc.args[0] if exc.args else exc}"}, 404)
        except ApiError as exc:
            return _json({"error": exc.message}, exc.status)
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return _json({"error": str(exc)}, 400)
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _portal(request: web.Request) -> Portal:
    return request.app[STATE_KEY].portal(request.match_info["tenant"])


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


async def health(request: web.Request) -> web.Response:
    """``GET /_sandbox/health``."""
    return _json({"status": "ok"})


async def stats(request: web.Request) -> web.Response:
    """``GET /_sandbox/stats``: server-wide and per-portal counters."""
    return _json(request.app[STATE_KEY].stats())


async def reset_all_stats(request: web.Request) -> web.Response:
    """``POST /_sandbox/reset-stats``."""
    request.app[STATE_KEY].reset_stats()
    return web.Response(status=204)


async def clear_cache(request: web.Request) -> web.Response:
    """``POST /_sandbox/clear-cache``: forget every rendered page (the next request for each is
    rendered again); its hit and miss counters go on."""
    request.app[STATE_KEY].cache.clear()
    return web.Response(status=204)


async def portals(request: web.Request) -> web.Response:
    """``GET /_sandbox/portals``: tenants and their deal counts."""
    state = request.app[STATE_KEY]
    return _json({t: {"deals_total": p.count} for t, p in state.portals.items()})


async def portal_stats(request: web.Request) -> web.Response:
    """``GET /_sandbox/portals/{tenant}/stats``."""
    return _json(_portal(request).stats())


async def portal_reset_stats(request: web.Request) -> web.Response:
    """``POST /_sandbox/portals/{tenant}/reset-stats``."""
    _portal(request).reset_stats()
    return web.Response(status=204)


async def get_faults(request: web.Request) -> web.Response:
    """``GET /_sandbox/portals/{tenant}/faults``: active rules."""
    return _json(_portal(request).fault_rules())


async def add_fault(request: web.Request) -> web.Response:
    """``POST /_sandbox/portals/{tenant}/faults`` ``{"kind": ..., "count"|"next": K,
    "every": N, "on": [..], "status": 503, "delay": s, "path": ..., "method": ...}``."""
    body = await _body(request)
    kind = body.pop("kind", None)
    if not isinstance(kind, str):
        raise ValueError("kind is required")
    rule_id = _portal(request).add_fault(kind, **body)
    return _json({"id": rule_id}, 201)


async def clear_faults(request: web.Request) -> web.Response:
    """``DELETE /_sandbox/portals/{tenant}/faults``."""
    _portal(request).clear_faults()
    return web.Response(status=204)


async def set_rate_limit(request: web.Request) -> web.Response:
    """``POST /_sandbox/portals/{tenant}/ratelimit`` ``{"tier", "time_scale", "retry_after",
    "reset"}``."""
    body = await _body(request)
    p = _portal(request)
    p.set_rate_limit(body.get("tier"), time_scale=body.get("time_scale"),
                     retry_after=body.get("retry_after"), reset=bool(body.get("reset")))
    s = p.stats()
    return _json({"tier": s["rate_limit_tier"], "time_scale": s["time_scale"]})


async def create_deal(request: web.Request) -> web.Response:
    """``POST /_sandbox/portals/{tenant}/deals`` ``{"properties": {...}, "at_ms": ...}``."""
    body = await _body(request)
    new_id = _portal(request).create_deal(body.get("properties") or {}, at_ms=body.get("at_ms"))
    return _json({"id": new_id}, 201)


async def get_deal(request: web.Request) -> web.Response:
    """``GET /_sandbox/portals/{tenant}/deals/{id}``: every property, archived or not."""
    return _json(_portal(request).deal(request.match_info["deal_id"]))


async def update_deal(request: web.Request) -> web.Response:
    """``PATCH /_sandbox/portals/{tenant}/deals/{id}`` ``{"properties": {...}, "at_ms"}``."""
    body = await _body(request)
    deal_id = request.match_info["deal_id"]
    _portal(request).update_deal(deal_id, body.get("properties") or {}, at_ms=body.get("at_ms"))
    return _json({"id": deal_id})


async def archive_deal(request: web.Request) -> web.Response:
    """``DELETE /_sandbox/portals/{tenant}/deals/{id}``: archive."""
    _portal(request).archive_deal(request.match_info["deal_id"])
    return web.Response(status=204)


async def set_lastmodified(request: web.Request) -> web.Response:
    """``POST /_sandbox/portals/{tenant}/lastmodified`` ``{"ms": ..., "ids": [...]?}``."""
    body = await _body(request)
    if "ms" not in body:
        raise ValueError("ms is required")
    n = _portal(request).set_all_lastmodified(int(body["ms"]), body.get("ids"))
    return _json({"updated": n})


async def add_custom_properties(request: web.Request) -> web.Response:
    """``POST /_sandbox/portals/{tenant}/custom-properties`` ``{"count": n}``."""
    body = await _body(request)
    names = _portal(request).add_custom_properties(int(body.get("count", 0)))
    return _json({"names": names}, 201)


def add_control_routes(app: web.Application) -> None:
    """Register the ``/_sandbox`` routes."""
    r = app.router
    base = "/_sandbox/portals/{tenant}"
    r.add_get("/_sandbox/health", _guard(health))
    r.add_get("/_sandbox/stats", _guard(stats))
    r.add_post("/_sandbox/reset-stats", _guard(reset_all_stats))
    r.add_post("/_sandbox/clear-cache", _guard(clear_cache))
    r.add_get("/_sandbox/portals", _guard(portals))
    r.add_get(f"{base}/stats", _guard(portal_stats))
    r.add_post(f"{base}/reset-stats", _guard(portal_reset_stats))
    r.add_get(f"{base}/faults", _guard(get_faults))
    r.add_post(f"{base}/faults", _guard(add_fault))
    r.add_delete(f"{base}/faults", _guard(clear_faults))
    r.add_post(f"{base}/ratelimit", _guard(set_rate_limit))
    r.add_post(f"{base}/deals", _guard(create_deal))
    r.add_get(f"{base}/deals/{{deal_id}}", _guard(get_deal))
    r.add_patch(f"{base}/deals/{{deal_id}}", _guard(update_deal))
    r.add_delete(f"{base}/deals/{{deal_id}}", _guard(archive_deal))
    r.add_post(f"{base}/lastmodified", _guard(set_lastmodified))
    r.add_post(f"{base}/custom-properties", _guard(add_custom_properties))
