"""The CRM search engine of one portal: request validation, filters, sorting, paging.

Values are kept in per-property columns (index-aligned lists), built on first use and then
updated in place as deals change, so a search costs one pass over the referenced columns and
consecutive pages of the same query reuse a cached, sorted match list.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import orjson

from loader.sandbox.catalog import BASE_PROPERTY_NAMES
from loader.sandbox.errors import ApiError, validation_error
from loader.sandbox.timeutil import parse_ms

SEARCH_MAX_LIMIT = 200
SEARCH_DEFAULT_LIMIT = 10
SEARCH_RESULT_CAP = 10_000
"""HubSpot: search is limited to 10,000 results per query; paging past that answers 400."""
MAX_FILTER_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS_TOTAL = 18
QUERY_PROPERTIES = ("dealname", "description", "dealtype", "pipeline", "dealstage")

OPERATORS = frozenset({
    "EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY",
    "NOT_HAS_PROPERTY", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN",
})

Key = Any  # a typed, comparable key (float, int, str) or None for "no value"


class SearchSource(Protocol):
    """What the engine needs from a portal."""

    count: int

    def property_type(self, name: str) -> str | None:
        """HubSpot type of a defined property, None when undefined."""

    def record_values(self, idx: int) -> dict[str, str | None]:
        """Effective values of the base properties of deal ``idx``."""

    def extra_values(self, idx: int, name: str) -> str | None:
        """Effective value of an extra custom property on deal ``idx``."""

    fast_columns: frozenset[str]

    def fast_value(self, idx: int, name: str) -> str | None:
        """Effective value of a property in ``fast_columns`` (cheap to compute)."""

    def is_archived(self, idx: int) -> bool:
        """Whether deal ``idx`` is archived."""


def key_function(ptype: str) -> Callable[[str | None], Key]:
    """The function mapping a raw property value to its comparison key for a property type."""
    if ptype == "number":
        def num(v: str | None) -> Key:
            if v is None:
                return None
            try:
                f = float(v)
            except ValueError:
                return None
            return None if f != f else f  # NaN has no order
        return num
    if ptype in ("datetime", "date"):
        return parse_ms
    if ptype == "bool":
        def boolean(v: str | None) -> Key:
            if v is None:
                return None
            s = v.strip().lower()
            return s if s in ("true", "false") else None
        return boolean

    def text(v: str | None) -> Key:
        return v.casefold() if v else None
    return text


class ColumnStore:
    """Index-aligned columns of raw values and comparison keys, kept current incrementally."""

    def __init__(self, source: SearchSource) -> None:
        self.source = source
        self.raw: dict[str, list[str | None]] = {}
        self.keys: dict[str, list[Key]] = {}
        self._base_built = False
        self._dirty: set[int] = set()

    def mark_dirty(self, idx: int) -> None:
        """Deal ``idx`` changed (or was created): refresh its values before the next search."""
        if self.raw:
            self._dirty.add(idx)

    def set_all(self, name: str, value: str | None, indices: Iterable[int] | None = None) -> None:
        """Set one column to ``value`` for all (or the given) deals without regenerating them."""
        col = self.raw.get(name)
        if col is None:
            return
        ptype = self.source.property_type(name) or "string"
        key = key_function(ptype)(value)
        keys = self.keys.get(name)
        rng = range(len(col)) if indices is None else [i for i in indices if i < len(col)]
        for i in rng:
            col[i] = value
            if keys is not None:
                keys[i] = key

    def _refresh(self) -> None:
        n = self.source.count
        pending = set(self._dirty)
        self._dirty.clear()
        if not self.raw:
            return
        length = len(next(iter(self.raw.values())))
        pending.update(range(length, n))
        fast = self.source.fast_columns
        for idx in sorted(pending):
            values = self.source.record_values(idx) if self._base_built else {}
            for name, col in self.raw.items():
                if name in values:
                    v = values[name]
                elif name in fast:
                    v = self.source.fast_value(idx, name)
                elif name in BASE_PROPERTY_NAMES:
                    v = None
                else:
                    v = self.source.extra_values(idx, name)
                if idx < len(col):
                    col[idx] = v
                else:
                    col.append(v)
                keys = self.keys.get(name)
                if keys is not None:
                    ptype = self.source.property_type(name) or "string"
                    k = key_function(ptype)(v)
                    if idx < len(keys):
                        keys[idx] = k
                    else:
                        keys.append(k)

    def ensure(self, names: Iterable[str]) -> None:
        """Make sure the columns of ``names`` exist and reflect every change so far.

        Date columns that need only a deal's timestamps are built cheaply; the first other
        base property builds every base column in one pass over generated deals.
        """
        self._refresh()
        n = self.source.count
        fast = self.source.fast_columns
        missing = set(names) - set(self.raw)
        if not self._base_built and any(
            m in BASE_PROPERTY_NAMES and m not in fast for m in missing
        ):
            todo = [name for name in BASE_PROPERTY_NAMES if name not in self.raw]
            cols: dict[str, list[str | None]] = {name: [None] * n for name in todo}
            for idx in range(n):
                values = self.source.record_values(idx)
                for name, col in cols.items():
                    col[idx] = values.get(name)
            self.raw.update(cols)
            self._base_built = True
        for name in missing - set(self.raw):
            if name in fast:
                self.raw[name] = [self.source.fast_value(i, name) for i in range(n)]
            else:
                self.raw[name] = [self.source.extra_values(i, name) for i in range(n)]

    def key_column(self, name: str) -> list[Key]:
        """Comparison keys of a column (``ensure`` it first)."""
        keys = self.keys.get(name)
        if keys is None:
            fn = key_function(self.source.property_type(name) or "string")
            keys = [fn(v) for v in self.raw[name]]
            self.keys[name] = keys
        return keys


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^\w@.\-]+", text.casefold()) if t]


def _token_match(raw: str | None, pattern: str) -> bool:
    if not raw:
        return False
    p = pattern.casefold().strip()
    toks = _tokens(raw)
    if "*" in p:
        return any(fnmatch.fnmatchcase(t, p) for t in toks) or fnmatch.fnmatchcase(
            raw.casefold(), p)
    if " " in p:
        return p in raw.casefold()
    return p in toks


class SearchRequest:
    """A validated search body."""

    def __init__(self, body: Any, source: SearchSource) -> None:
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON on line 1: expected an object")
        self.limit = _int_field(body, "limit", SEARCH_DEFAULT_LIMIT)
        if self.limit < 0:
            raise validation_error("limit must be >= 0")
        if self.limit > SEARCH_MAX_LIMIT:
            raise validation_error(
                f"Limit may not exceed {SEARCH_MAX_LIMIT}. Provided limit: {self.limit}.",
                context={"limit": [str(self.limit)]})
        after = body.get("after")
        if after in (None, ""):
            self.after = 0
        else:
            try:
                self.after = int(str(after))
            except ValueError:
                raise validation_error(f"Invalid paging cursor: {after}") from None
            if self.after < 0:
                raise validation_error(f"Invalid paging cursor: {after}")
        if self.after + self.limit > SEARCH_RESULT_CAP:
            raise validation_error(
                f"The CRM search API returns at most {SEARCH_RESULT_CAP} results for one query; "
                f"a page at after={self.after} with limit={self.limit} reaches past that. "
                "Narrow the query (for example with a filter on hs_lastmodifieddate or "
                "hs_object_id) instead of paging further.",
                context={"after": [str(self.after)], "limit": [str(self.limit)]})
        props = body.get("properties")
        if props is not None and (
            not isinstance(props, list) or not all(isinstance(p, str) for p in props)
        ):
            raise validation_error("properties must be a list of strings")
        self.properties: list[str] | None = props or None
        query = body.get("query")
        if query is not None and not isinstance(query, str):
            raise validation_error("query must be a string")
        self.query: str | None = query.strip() if query and query.strip() else None
        self.sort = _parse_sorts(body.get("sorts"), source)
        self.groups = _parse_groups(body.get("filterGroups"), source)

    def cache_key(self) -> bytes:
        """Identifies the matching set and order (not the page)."""
        return orjson.dumps([self.groups, self.sort, self.query], option=orjson.OPT_SORT_KEYS)

    def referenced(self) -> set[str]:
        """Properties the filters, sort and query read."""
        names = {f["propertyName"] for g in self.groups for f in g}
        if self.sort:
            names.add(self.sort[0])
        if self.query:
            names.update(QUERY_PROPERTIES)
        return names


def _int_field(body: dict[str, Any], name: str, default: int) -> int:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool):
        raise validation_error(f"{name} must be an integer")
    try:
        return int(v)
    except (TypeError, ValueError):
        raise validation_error(f"{name} must be an integer") from None


def _parse_sorts(sorts: Any, source: SearchSource) -> tuple[str, bool] | None:
    """Sorts as HubSpot takes them: ``["prop"]``, ``["-prop"]`` or
    ``[{"propertyName": "prop", "direction": "ASCENDING|DESCENDING"}]``; at most one."""
    if not sorts:
        return None
    if not isinstance(sorts, list):
        raise validation_error("sorts must be a list")
    if len(sorts) > 1:
        raise validation_error("Only one sort is supported per search request.")
    s = sorts[0]
    if isinstance(s, str):
        desc = s.startswith("-")
        name = s[1:] if desc else s
    elif isinstance(s, dict):
        name = s.get("propertyName")
        direction = str(s.get("direction", "ASCENDING")).upper()
        if direction not in ("ASCENDING", "DESCENDING"):
            raise validation_error(f"Invalid sort direction: {direction}")
        desc = direction == "DESCENDING"
    else:
        raise validation_error("Invalid sort")
    if not isinstance(name, str) or not name:
        raise validation_error("Sort needs a propertyName")
    if source.property_type(name) is None:
        raise validation_error(f"There was a problem with the request. Unknown sort property "
                               f"'{name}'.", context={"propertyName": [name]})
    return (name, desc)


def _parse_groups(groups: Any, source: SearchSource) -> list[list[dict[str, Any]]]:
    if groups is None:
        return []
    if not isinstance(groups, list):
        raise validation_error("filterGroups must be a list")
    if len(groups) > MAX_FILTER_GROUPS:
        raise validation_error(
            f"Too many filter groups: {len(groups)}. The maximum is {MAX_FILTER_GROUPS}.")
    out = []
    total = 0
    for g in groups:
        filters = g.get("filters") if isinstance(g, dict) else None
        if not isinstance(filters, list):
            raise validation_error("Each filter group needs a filters list")
        if len(filters) > MAX_FILTERS_PER_GROUP:
            raise validation_error(
                f"Too many filters in a group: {len(filters)}. The maximum is "
                f"{MAX_FILTERS_PER_GROUP}.")
        total += len(filters)
        parsed = [_parse_filter(f, source) for f in filters]
        if parsed:
            out.append(parsed)
    if total > MAX_FILTERS_TOTAL:
        raise validation_error(
            f"Too many filters: {total}. The maximum is {MAX_FILTERS_TOTAL}.")
    return out


def _parse_filter(f: Any, source: SearchSource) -> dict[str, Any]:
    if not isinstance(f, dict):
        raise validation_error("Invalid filter")
    name = f.get("propertyName")
    op = f.get("operator")
    if not isinstance(name, str) or not name:
        raise validation_error("A filter needs a propertyName")
    if op not in OPERATORS:
        raise validation_error(f"Invalid filter operator: {op}",
                               context={"operator": [str(op)]})
    ptype = source.property_type(name)
    if ptype is None:
        raise validation_error(
            f"There was a problem with the request. Unknown property '{name}' in filter.",
            context={"propertyName": [name]})
    out: dict[str, Any] = {"propertyName": name, "operator": op}
    keyf = key_function(ptype)

    def conv(raw: Any, field: str) -> Any:
        if raw is None or isinstance(raw, (dict, list)):
            raise validation_error(f"Filter on '{name}' with operator {op} needs '{field}'")
        s = str(raw).lower() if isinstance(raw, bool) else str(raw)
        k = keyf(s)
        if k is None and ptype != "string" and ptype != "enumeration":
            raise validation_error(
                f"Invalid value '{s}' for property '{name}' of type {ptype}",
                context={"propertyName": [name]})
        return k

    if op in ("EQ", "NEQ", "LT", "LTE", "GT", "GTE"):
        out["value"] = conv(f.get("value"), "value")
    elif op == "BETWEEN":
        out["value"] = conv(f.get("value"), "value")
        out["highValue"] = conv(f.get("highValue"), "highValue")
    elif op in ("IN", "NOT_IN"):
        values = f.get("values")
        if not isinstance(values, list) or not values:
            raise validation_error(f"Filter on '{name}' with operator {op} needs 'values'")
        out["values"] = sorted({conv(v, "values") for v in values}, key=repr)
    elif op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        v = f.get("value")
        if v is None:
            raise validation_error(f"Filter on '{name}' with operator {op} needs 'value'")
        out["value"] = str(v)
    return out


def _filter_indices(
    store: ColumnStore, cand: list[int], flt: dict[str, Any]
) -> list[int]:
    name, op = flt["propertyName"], flt["operator"]
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        raw = store.raw[name]
        pat = flt["value"]
        if op == "CONTAINS_TOKEN":
            return [i for i in cand if _token_match(raw[i], pat)]
        return [i for i in cand if not _token_match(raw[i], pat)]
    keys = store.key_column(name)
    if op == "HAS_PROPERTY":
        return [i for i in cand if keys[i] is not None]
    if op == "NOT_HAS_PROPERTY":
        return [i for i in cand if keys[i] is None]
    if op == "IN":
        vs = set(flt["values"])
        return [i for i in cand if keys[i] in vs]
    if op == "NOT_IN":
        vs = set(flt["values"])
        return [i for i in cand if keys[i] is None or keys[i] not in vs]
    v = flt["value"]
    if op == "EQ":
        return [i for i in cand if keys[i] is not None and keys[i] == v]
    if op == "NEQ":
        return [i for i in cand if keys[i] is None or keys[i] != v]
    if v is None:
        return []
    if op == "BETWEEN":
        hv = flt["highValue"]
        if hv is None:
            return []
        return [i for i in cand if keys[i] is not None and v <= keys[i] <= hv]
    if op == "LT":
        return [i for i in cand if keys[i] is not None and keys[i] < v]
    if op == "LTE":
        return [i for i in cand if keys[i] is not None and keys[i] <= v]
    if op == "GT":
        return [i for i in cand if keys[i] is not None and keys[i] > v]
    return [i for i in cand if keys[i] is not None and keys[i] >= v]  # GTE


class SearchEngine:
    """Runs validated searches against a portal's columns, caching sorted match lists."""

    CACHE_SIZE = 32

    def __init__(self, source: SearchSource) -> None:
        self.source = source
        self.store = ColumnStore(source)
        self._cache: dict[bytes, list[int]] = {}
        self._cache_version = -1
        #: The live deals' indices, ascending, and the deal count they were taken at.
        self._live: tuple[int, list[int]] | None = None

    def invalidate(self, idx: int | None = None) -> None:
        """Deal ``idx`` changed (None: something changed that is handled elsewhere, such as
        a deal archived)."""
        if idx is not None:
            self.store.mark_dirty(idx)
        else:
            self._live = None
        self._cache.clear()

    def _live_indices(self) -> list[int]:
        """Indices of the non-archived deals, ascending (not to be changed by the caller).

        Kept until a deal is archived or created: a search after any other change took them
        anew from every deal (5 of the 12 ms an incremental scan's first search page took to
        match at 50,000 deals)."""
        n = self.source.count
        if self._live is None or self._live[0] != n:
            self._live = (n, [i for i in range(n) if not self.source.is_archived(i)])
        return self._live[1]

    def matches(self, req: SearchRequest) -> list[int]:
        """Indices of all non-archived deals matching ``req``, in result order."""
        key = req.cache_key()
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        self.store.ensure(req.referenced())
        base = self._live_indices()
        if req.groups:
            selected: set[int] = set()
            for group in req.groups:
                cand = base
                for flt in group:
                    cand = _filter_indices(self.store, cand, flt)
                    if not cand:
                        break
                selected.update(cand)
            result = sorted(selected)
        else:
            result = list(base)  # sorted in place below, and kept in the cache
        if req.query:
            words = _tokens(req.query)
            cols = [self.store.raw[p] for p in QUERY_PROPERTIES]
            result = [
                i for i in result
                if all(any(any(t.startswith(w) for t in _tokens(c[i] or "")) for c in cols)
                       for w in words)
            ]
        if req.sort:
            name, desc = req.sort
            keys = self.store.key_column(name)
            if desc:
                result.sort(key=lambda i: (keys[i] is not None, keys[i] or 0), reverse=True)
            else:
                result.sort(key=lambda i: (keys[i] is None, keys[i] or 0))
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = result
        return result


def parse_search(body: Any, source: SearchSource) -> SearchRequest:
    """Validate a search body; raises ``ApiError`` (400) on bad input."""
    try:
        return SearchRequest(body, source)
    except ApiError:
        raise
    except (TypeError, AttributeError) as exc:  # malformed nested structures
        raise validation_error(f"Invalid search request: {exc}") from None
