"""The aiohttp application and ``SandboxServer``, which runs it in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from loader.sandbox.cache import ResponseCache
from loader.sandbox.control import STATE_KEY, add_control_routes
from loader.sandbox.errors import AUTH_MESSAGE, ApiError, correlation_id, error_body
from loader.sandbox.faults import FaultRule
from loader.sandbox.portal import Portal
from loader.sandbox.ratelimit import TIER_CHOICES
from loader.sandbox.routes import JSON_TYPE, add_routes, json_response

MAX_URL_LENGTH = 16_300
"""Longest URL (``https://api.hubapi.com`` + path + query) HubSpot accepts; longer GETs get
414. Found experimentally by others (Airbyte: "HubSpot allows the URL length up to ~16300
symbols"; PostHog: "around 16.2k characters")."""
HUBSPOT_ORIGIN = "https://api.hubapi.com"

_HTML_414 = (
    b"<html>\r\n<head><title>414 Request-URI Too Large</title></head>\r\n<body>\r\n"
    b"<center><h1>414 Request-URI Too Large</h1></center>\r\n<hr><center>cloudflare</center>"
    b"\r\n</body>\r\n</html>\r\n"
)
_GATEWAY_HTML = {
    502: b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
         b"</h1></center><hr><center>cloudflare</center></body></html>",
    504: b"<html><head><title>504 Gateway Time-out</title></head><body><center><h1>504 "
         b"Gateway Time-out</h1></center><hr><center>cloudflare</center></body></html>",
    500: b"<html><head><title>500 Internal Server Error</title></head><body><h1>Internal "
         b"Server Error</h1></body></html>",
    503: b"<html><head><title>503 Service Temporarily Unavailable</title></head><body><center>"
         b"<h1>503 Service Temporarily Unavailable</h1></center></body></html>",
}
_BAD_SHAPE_HTML = (
    b"<!DOCTYPE html><html><head><title>HubSpot</title></head><body><h1>We'll be right back"
    b"</h1><p>HubSpot is undergoing maintenance.</p></body></html>"
)

OPTION_DEFAULTS: dict[str, Any] = {
    "custom_properties": 0,
    "rate_limit_tier": "off",
    "time_scale": 1.0,
    "retry_after": "alternate",
    "deals_per_portal": None,
    "max_url_length": MAX_URL_LENGTH,
    "response_cache_mb": 512,
}


class SandboxState:
    """Everything the app serves: portals by tenant and by token, and server-wide counters."""

    def __init__(self, portals: dict[str, str], deals: int, seed: int,
                 options: dict[str, Any]) -> None:
        unknown = set(options) - set(OPTION_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown SandboxServer option(s): {', '.join(sorted(unknown))}")
        opts = {**OPTION_DEFAULTS, **options}
        if not portals:
            raise ValueError("at least one portal (tenant -> token) is required")
        tokens = list(portals.values())
        if len(set(tokens)) != len(tokens):
            raise ValueError("each portal needs its own token")
        if opts["rate_limit_tier"] not in TIER_CHOICES:
            raise ValueError(f"rate_limit_tier must be one of {TIER_CHOICES}")
        per_portal: dict[str, int] = dict(opts["deals_per_portal"] or {})
        unknown_tenants = set(per_portal) - set(portals)
        if unknown_tenants:
            raise ValueError(f"deals_per_portal names unknown tenant(s): {sorted(unknown_tenants)}")
        self.max_url_length = int(opts["max_url_length"])
        self.cache = ResponseCache(int(float(opts["response_cache_mb"]) * 1024 * 1024))
        self.portals: dict[str, Portal] = {}
        self.by_token: dict[str, Portal] = {}
        for tenant, token in portals.items():
            if not tenant or not token:
                raise ValueError("tenant ids and tokens must be non-empty")
            p = Portal(
                tenant, token, deals=int(per_portal.get(tenant, deals)), seed=seed,
                custom_properties=int(opts["custom_properties"]),
                rate_limit_tier=opts["rate_limit_tier"], time_scale=float(opts["time_scale"]),
                retry_after=opts["retry_after"],
            )
            self.portals[tenant] = p
            self.by_token[token] = p
        self._lock = threading.Lock()
        self.count_401 = 0
        self.count_414 = 0
        self.unauthenticated_by_path: Counter[str] = Counter()

    def portal(self, tenant: str) -> Portal:
        """The portal of ``tenant`` (KeyError if unknown)."""
        return self.portals[tenant]

    def authenticate(self, header: str | None) -> Portal | None:
        """The portal whose token is in an ``Authorization: Bearer`` header, else None."""
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.by_token.get(token.strip())

    def count_unauthenticated(self, route: str, status: int) -> None:
        """Count a request answered before a portal was known (401, or 414 without token)."""
        with self._lock:
            self.unauthenticated_by_path[route] += 1
            if status == 401:
                self.count_401 += 1
            elif status == 414:
                self.count_414 += 1

    def stats(self) -> dict[str, Any]:
        """Server-wide counters and each portal's stats."""
        per = {t: p.stats() for t, p in self.portals.items()}
        with self._lock:
            return {
                "requests_total": sum(s["requests_total"] for s in per.values())
                + sum(self.unauthenticated_by_path.values()),
                "count_401": self.count_401,
                "count_414": self.count_414 + sum(s["count_414"] for s in per.values()),
                "count_429": sum(s["count_429"] for s in per.values()),
                "unauthenticated_by_path": dict(self.unauthenticated_by_path),
                "response_cache": {"hits": self.cache.hits, "misses": self.cache.misses,
                                   "bytes": self.cache.size},
                "portals": per,
            }

    def reset_stats(self) -> None:
        """Zero every counter."""
        with self._lock:
            self.count_401 = 0
            self.count_414 = 0
            self.unauthenticated_by_path.clear()
        for p in self.portals.values():
            p.reset_stats()


def _route_name(request: web.Request) -> str:
    """``METHOD /template`` of the matched route, e.g. ``GET /crm/v3/objects/deals/{dealId}``."""
    info = request.match_info
    resource = info.route.resource if info.route is not None else None
    path = resource.canonical if resource is not None else request.path
    if "object_type" in info:
        path = path.replace("{object_type}", info["object_type"])
    path = path.replace("{deal_id}", "{dealId}").replace("{property_name}", "{propertyName}")
    path = path.replace("{pipeline_id}", "{pipelineId}")
    return f"{request.method} {path}"


def _fault_status_response(rule: FaultRule, portal: Portal) -> web.Response:
    status = rule.status
    if status == 429:
        body = portal.limiter.error_body("You have reached your ten_secondly_rolling limit.",
                                         "TEN_SECONDLY_ROLLING")
        headers = {"Retry-After": "1"} if rule.served % 2 else {}
        return json_response(body, status=429, headers=headers)
    use_html = rule.body == "html" or (rule.body is None and status in (502, 504))
    if use_html:
        return web.Response(body=_GATEWAY_HTML[status], status=status,
                            headers={"Content-Type": "text/html"})
    category = {500: "INTERNAL_ERROR", 502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE",
                504: "GATEWAY_TIMEOUT"}[status]
    message = {500: "internal error", 502: "Bad Gateway", 503: "Service Unavailable",
               504: "Gateway Timeout"}[status]
    return json_response(error_body(category, message), status=status)


async def _send_truncated(request: web.Request, resp: web.Response) -> web.StreamResponse:
    """Declare the full Content-Length, send half of the body, then drop the connection."""
    body = resp.body if isinstance(resp.body, bytes) else b""
    out = web.StreamResponse(status=resp.status, headers=resp.headers)
    out.content_length = len(body)
    await out.prepare(request)
    await out.write(body[: len(body) // 2])
    transport = request.transport
    if transport is not None:
        transport.close()
    return out


def _apply_body_fault(rule: FaultRule, resp: web.Response) -> web.Response:
    if rule.kind == "bad_json":
        return web.Response(body=b'{"data": []}', status=200, headers={"Content-Type": JSON_TYPE})
    if rule.kind == "html":
        return web.Response(body=_BAD_SHAPE_HTML, status=200,
                            headers={"Content-Type": "text/html;charset=utf-8"})
    body = resp.body if isinstance(resp.body, bytes) else b""
    out = web.Response(body=body[: len(body) // 2], status=resp.status,
                       headers={k: v for k, v in resp.headers.items()
                                if k.lower() != "content-length"})
    return out


@web.middleware
async def hubspot_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """URL length (414), auth (401), rate limits (429) and faults around every API route."""
    if request.path.startswith("/_sandbox/"):
        return await handler(request)
    state = request.app[STATE_KEY]
    route = _route_name(request)
    portal = state.authenticate(request.headers.get("Authorization"))
    if len(HUBSPOT_ORIGIN) + len(request.raw_path) > state.max_url_length:
        resp = web.Response(body=_HTML_414, status=414, headers={"Content-Type": "text/html"})
        if portal is None:
            state.count_unauthenticated(route, 414)
        else:
            portal.count_request(route)
            portal.count_status(414)
        return resp
    if portal is None:
        state.count_unauthenticated(route, 401)
        return json_response(error_body("INVALID_AUTHENTICATION", AUTH_MESSAGE), status=401)
    number = portal.count_request(route)
    is_search = request.path.endswith("/search")
    decision = portal.check_rate(is_search=is_search)
    headers = {"X-HubSpot-Correlation-Id": correlation_id(), **decision.headers}
    if not decision.allowed:
        portal.count_status(429)
        return json_response(decision.body, status=429, headers=headers)
    delay, rule = portal.pick_fault(number, request.method, request.path)
    if delay:
        await asyncio.sleep(delay)
    if rule is not None and rule.kind == "status":
        resp = _fault_status_response(rule, portal)
        resp.headers.update(headers)
        portal.count_status(resp.status)
        return resp
    try:
        resp = await handler(request)
    except ApiError as exc:
        resp = json_response(exc.body(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status == 405:
            msg = f"Method {request.method} is not allowed on {request.path}"
            resp = json_response(error_body("VALIDATION_ERROR", msg), status=405)
        else:
            resp = json_response(error_body("OBJECT_NOT_FOUND", exc.reason), status=exc.status)
    resp.headers.update(headers)
    if rule is not None and isinstance(resp, web.Response):
        if rule.kind == "truncate":
            portal.count_status(resp.status)
            return await _send_truncated(request, resp)
        resp = _apply_body_fault(rule, resp)
        resp.headers.update(headers)
    portal.count_status(resp.status)
    return resp


def make_app(state: SandboxState) -> web.Application:
    """Build the aiohttp application serving ``state``."""
    app = web.Application(middlewares=[hubspot_middleware], client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = state
    add_control_routes(app)
    add_routes(app)
    return app


class SandboxServer:
    """A HubSpot-compatible server for tests and benchmarks, running in a background thread.

    ``portals`` maps tenant id -> bearer token. ``deals`` generated deals per portal from
    ``seed``. Options: ``custom_properties`` (extra custom deal properties per portal),
    ``rate_limit_tier`` ("off", "free", "starter", "pro", "enterprise"), ``time_scale``
    (multiplies rate-limit windows), ``retry_after`` ("alternate", "always", "never"),
    ``deals_per_portal`` ({tenant: n} overriding ``deals``), ``max_url_length`` (default
    16,300), ``response_cache_mb`` (rendered list/search pages kept for repeated scans,
    default 512; 0 = off).
    """

    def __init__(self, portals: dict[str, str], deals: int = 100, seed: int = 0, port: int = 0,
                 host: str = "127.0.0.1", **options: Any) -> None:
        self.state = SandboxState(dict(portals), int(deals), int(seed), options)
        self.host = host
        self._requested_port = int(port)
        self.port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` once started."""
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    @property
    def portals(self) -> dict[str, Portal]:
        """All portals by tenant id."""
        return self.state.portals

    def portal(self, tenant: str) -> Portal:
        """The Portal of ``tenant`` (data, faults, rate limits, counters)."""
        return self.state.portal(tenant)

    def stats(self) -> dict[str, Any]:
        """Server-wide and per-portal counters (same as ``GET /_sandbox/stats``)."""
        return self.state.stats()

    async def _serve(self) -> None:
        runner = web.AppRunner(
            make_app(self.state), access_log=None, shutdown_timeout=0.5,
            max_line_size=1 << 20, max_field_size=1 << 16,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._stop_event = asyncio.Event()
            self._ready.set()
            await self._stop_event.wait()
        finally:
            await runner.cleanup()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced to start()
            self._error = exc
        finally:
            self._ready.set()
            loop.close()

    def start(self) -> SandboxServer:
        """Start serving in a background thread; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="hubspot-sandbox", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"sandbox failed to start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        thread, loop, ev = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and ev is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                pass
        thread.join(timeout=10)
        self._thread = None

    def wait(self) -> None:
        """Block until the server thread ends (after ``stop`` from another thread)."""
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
