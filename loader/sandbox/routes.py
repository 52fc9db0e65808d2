"""HubSpot API routes: deals (list, read, batch read, search, writes), properties, pipelines.

Handlers run after ``server.hubspot_middleware`` has authenticated the request (and applied
URL-length, rate-limit and fault rules); they raise ``ApiError`` for HubSpot error answers.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from multidict import MultiDict

from loader.sandbox.control import STATE_KEY
from loader.sandbox.errors import ApiError, validation_error
from loader.sandbox.portal import Portal, encode_cursor
from loader.sandbox.search import parse_search
from loader.sandbox.timeutil import iso_ms, now_ms

OBJECT_TYPES = "deals|0-3"
LIST_MAX_LIMIT = 100
LIST_DEFAULT_LIMIT = 10
HISTORY_MAX_LIMIT = 50
"""HubSpot lowers the page size to 50 objects when propertiesWithHistory is requested."""
BATCH_MAX_INPUTS = 100
JSON_TYPE = "application/json;charset=utf-8"


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    """An orjson-encoded JSON response with HubSpot's content type."""
    body = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    h = {"Content-Type": JSON_TYPE}
    if headers:
        h.update(headers)
    return web.Response(body=body, status=status, headers=h)


def _portal(request: web.Request) -> Portal:
    portal = request.app[STATE_KEY].authenticate(request.headers.get("Authorization"))
    assert portal is not None, "hubspot_middleware authenticates every API request"
    return portal


def _multi(query: MultiDict[str], name: str) -> list[str] | None:
    """A multi-valued parameter in both forms (``a,b`` and repeated); None when absent."""
    raw = query.getall(name, None)
    if raw is None:
        return None
    names = [p.strip() for v in raw for p in v.split(",")]
    names = [p for p in names if p]
    return names or None


def _bool(query: MultiDict[str], name: str) -> bool:
    v = query.get(name)
    if v is None or v == "":
        return False
    low = v.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    raise validation_error(f"Invalid boolean for {name}: {v!r}", context={name: [v]})


def _limit(query: MultiDict[str]) -> int:
    v = query.get("limit")
    if v is None or v == "":
        return LIST_DEFAULT_LIMIT
    try:
        n = int(v)
    except ValueError:
        raise validation_error(f"Invalid integer for limit: {v!r}",
                               context={"limit": [v]}) from None
    if n < 1:
        raise validation_error(f"limit must be at least 1, got {n}", context={"limit": [v]})
    return n


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise validation_error(f"Invalid input JSON on line 1: {exc}") from None


def _history_names(portal: Portal, names: list[str] | None, limit: int) -> list[str] | None:
    if names is None:
        return None
    if limit > HISTORY_MAX_LIMIT:
        raise validation_error(
            f"The maximum limit when requesting propertiesWithHistory is {HISTORY_MAX_LIMIT}; "
            f"requested limit: {limit}.", context={"limit": [str(limit)]})
    return portal.resolve_properties(names)


async def list_deals(request: web.Request) -> web.Response:
    """``GET /crm/v3/objects/deals``: a page of deals in id order."""
    portal = _portal(request)
    cache = request.app[STATE_KEY].cache
    key = ("list", request.host, request.raw_path)
    cached = cache.get(portal.tenant, portal.version, key)
    if cached is not None:
        return json_response(cached)
    q = request.query
    limit = min(_limit(q), LIST_MAX_LIMIT)  # HubSpot caps pages at 100 objects
    names = portal.resolve_properties(_multi(q, "properties"))
    history = _history_names(portal, _multi(q, "propertiesWithHistory"), limit)
    archived = _bool(q, "archived")
    with portal.lock:
        version = portal.version
        page, nxt = portal.list_page(q.get("after") or None, limit, archived)
        results = [portal.render(i, names, history) for i in page]
    body: dict[str, Any] = {"results": results}
    if nxt is not None:
        cursor = encode_cursor(nxt)
        query = MultiDict(q)
        query.popall("after", None)
        query["after"] = cursor
        body["paging"] = {"next": {"after": cursor,
                                   "link": str(request.url.with_query(query))}}
    raw = orjson.dumps(body)
    cache.put(portal.tenant, version, key, raw)
    return json_response(raw)


async def get_deal(request: web.Request) -> web.Response:
    """``GET /crm/v3/objects/deals/{dealId}``."""
    portal = _portal(request)
    q = request.query
    id_property = q.get("idProperty")
    if id_property not in (None, "", "hs_object_id"):
        raise validation_error(f"Unsupported idProperty in the sandbox: {id_property}")
    idx = portal.find(request.match_info["deal_id"], archived=_bool(q, "archived"))
    names = portal.resolve_properties(_multi(q, "properties"))
    history = _multi(q, "propertiesWithHistory")
    with portal.lock:
        obj = portal.render(idx, names, portal.resolve_properties(history) if history else None)
    return json_response(obj)


async def batch_read(request: web.Request) -> web.Response:
    """``POST /crm/v3/objects/deals/batch/read``: deals by id; 207 when some are missing."""
    portal = _portal(request)
    started = iso_ms(now_ms())
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise validation_error("inputs is required and must be a list")
    inputs = body["inputs"]
    id_property = body.get("idProperty")
    if id_property not in (None, "", "hs_object_id"):
        raise validation_error(f"Unsupported idProperty in the sandbox: {id_property}")
    props = body.get("properties")
    hist = body.get("propertiesWithHistory")
    for name, v in (("properties", props), ("propertiesWithHistory", hist)):
        if v is not None and not (isinstance(v, list) and all(isinstance(s, str) for s in v)):
            raise validation_error(f"{name} must be a list of strings")
    limit = HISTORY_MAX_LIMIT if hist else BATCH_MAX_INPUTS
    if len(inputs) > limit:
        raise validation_error(
            f"Too many inputs: {len(inputs)}. The maximum is {limit} per batch request.",
            context={"inputs": [str(len(inputs))]})
    archived = _bool(request.query, "archived")
    names = portal.resolve_properties(props or None)
    history = portal.resolve_properties(hist) if hist else None
    results = []
    missing: list[str] = []
    seen: set[str] = set()
    with portal.lock:
        for item in inputs:
            ident = str(item.get("id")) if isinstance(item, dict) else str(item)
            if ident in seen:
                continue
            seen.add(ident)
            try:
                idx = portal.find(ident, archived=archived)
            except ApiError:
                missing.append(ident)
                continue
            results.append(portal.render(idx, names, history))
    out: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                           "completedAt": iso_ms(now_ms())}
    if missing:
        out["numErrors"] = 1
        out["errors"] = [{
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": "Could not get some DEAL objects, they may be deleted or not exist. "
                       "Check that ids are valid.",
            "context": {"ids": missing},
            "errors": [],
            "links": {},
        }]
        return json_response(out, status=207)
    return json_response(out)


async def search_deals(request: web.Request) -> web.Response:
    """``POST /crm/v3/objects/deals/search``."""
    portal = _portal(request)
    cache = request.app[STATE_KEY].cache
    raw_body = await request.read()
    key = ("search", raw_body)
    cached = cache.get(portal.tenant, portal.version, key)
    if cached is not None:
        return json_response(cached)
    body = await _json_body(request)
    with portal.lock:
        version = portal.version
        req = parse_search(body, portal)
        page, total = portal.run_search(req)
        names = portal.resolve_properties(req.properties)
        results = [portal.render(i, names) for i in page]
    out: dict[str, Any] = {"total": total, "results": results}
    nxt = req.after + req.limit
    if req.limit and nxt < total:
        out["paging"] = {"next": {"after": str(nxt)}}
    raw = orjson.dumps(out)
    cache.put(portal.tenant, version, key, raw)
    return json_response(raw)


def _properties_arg(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
        raise validation_error("properties is required and must be an object")
    return body["properties"]


async def create_deal(request: web.Request) -> web.Response:
    """``POST /crm/v3/objects/deals`` -> 201 with the new deal."""
    portal = _portal(request)
    props = _properties_arg(await _json_body(request))
    new_id = portal.create_deal(props)
    with portal.lock:
        idx = portal.find(new_id)
        names = portal.resolve_properties(
            list(dict.fromkeys([*portal.resolve_properties(None), *props])))
        obj = portal.render(idx, names)
    return json_response(obj, status=201)


async def update_deal(request: web.Request) -> web.Response:
    """``PATCH /crm/v3/objects/deals/{dealId}`` -> 200 with the updated deal."""
    portal = _portal(request)
    props = _properties_arg(await _json_body(request))
    deal_id = request.match_info["deal_id"]
    portal.update_deal(deal_id, props)
    with portal.lock:
        idx = portal.find(deal_id)
        names = portal.resolve_properties(
            list(dict.fromkeys([*portal.resolve_properties(None), *props])))
        obj = portal.render(idx, names)
    return json_response(obj)


async def archive_deal(request: web.Request) -> web.Response:
    """``DELETE /crm/v3/objects/deals/{dealId}``: archive; 204."""
    _portal(request).archive_deal(request.match_info["deal_id"])
    return web.Response(status=204)


async def batch_archive(request: web.Request) -> web.Response:
    """``POST /crm/v3/objects/deals/batch/archive``: archive the listed deals; 204."""
    portal = _portal(request)
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise validation_error("inputs is required and must be a list")
    if len(body["inputs"]) > BATCH_MAX_INPUTS:
        raise validation_error(f"Too many inputs. The maximum is {BATCH_MAX_INPUTS}.")
    for item in body["inputs"]:
        ident = str(item.get("id")) if isinstance(item, dict) else str(item)
        try:
            portal.archive_deal(ident)
        except ApiError:
            continue  # HubSpot ignores ids that do not exist here
    return web.Response(status=204)


async def list_properties(request: web.Request) -> web.Response:
    """``GET /crm/v3/properties/deals``: every deal property definition."""
    if _bool(request.query, "archived"):
        return json_response({"results": []})
    return json_response(_portal(request).properties_json())


async def get_property(request: web.Request) -> web.Response:
    """``GET /crm/v3/properties/deals/{propertyName}``."""
    name = request.match_info["property_name"]
    d = _portal(request).property_definition(name)
    if d is None:
        raise ApiError(404, "OBJECT_NOT_FOUND",
                       f"Unable to find property with name '{name}' on object type 0-3.")
    return json_response(d)


async def list_pipelines(request: web.Request) -> web.Response:
    """``GET /crm/v3/pipelines/deals``."""
    return json_response(_portal(request).pipelines_body())


def _pipeline(request: web.Request) -> dict[str, Any]:
    pid = request.match_info["pipeline_id"]
    for p in _portal(request).pipelines():
        if p["id"] == pid:
            return p
    raise ApiError(404, "OBJECT_NOT_FOUND", f"Unable to find pipeline {pid}.")


async def get_pipeline(request: web.Request) -> web.Response:
    """``GET /crm/v3/pipelines/deals/{pipelineId}``."""
    return json_response(_pipeline(request))


async def get_pipeline_stages(request: web.Request) -> web.Response:
    """``GET /crm/v3/pipelines/deals/{pipelineId}/stages``."""
    return json_response({"results": _pipeline(request)["stages"]})


def add_routes(app: web.Application) -> None:
    """Register the HubSpot routes (``deals`` and its object type id ``0-3``)."""
    ot = "{object_type:" + OBJECT_TYPES + "}"
    objects = f"/crm/v3/objects/{ot}"
    r = app.router
    r.add_post(f"{objects}/search", search_deals)
    r.add_post(f"{objects}/batch/read", batch_read)
    r.add_post(f"{objects}/batch/archive", batch_archive)
    r.add_get(objects, list_deals, allow_head=False)
    r.add_post(objects, create_deal)
    r.add_get(objects + "/{deal_id}", get_deal, allow_head=False)
    r.add_patch(objects + "/{deal_id}", update_deal)
    r.add_delete(objects + "/{deal_id}", archive_deal)
    r.add_get(f"/crm/v3/properties/{ot}", list_properties, allow_head=False)
    r.add_get(f"/crm/v3/properties/{ot}/{{property_name}}", get_property, allow_head=False)
    r.add_get(f"/crm/v3/pipelines/{ot}", list_pipelines, allow_head=False)
    r.add_get(f"/crm/v3/pipelines/{ot}/{{pipeline_id}}", get_pipeline, allow_head=False)
    r.add_get(f"/crm/v3/pipelines/{ot}/{{pipeline_id}}/stages", get_pipeline_stages,
              allow_head=False)
