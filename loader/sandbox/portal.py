"""State of one sandbox portal (tenant): its deals, schema, limits, faults and counters.

Generated deals are never stored; only what tests or API writes change is kept
(``_overrides``, ``_archived``, the bulk "last modified" stamp). Every public method is
thread-safe, so tests can drive a portal while the server thread serves it.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from loader.sandbox.catalog import (
    BASE_PROPERTY_NAMES,
    DEFAULT_PIPELINE,
    DEFAULT_PROPERTIES,
    PIPELINES,
    PROPERTY_TYPES,
    STAGES_BY_ID,
    extra_definition,
    extra_property_name,
    extra_property_type,
    pipeline_json,
    standard_definitions,
)
from loader.sandbox.data import BaseDeal, DealGenerator, deal_id, deal_index
from loader.sandbox.errors import ApiError, not_found, validation_error
from loader.sandbox.faults import FaultInjector, FaultRule
from loader.sandbox.ratelimit import Decision, RateLimiter
from loader.sandbox.search import SearchEngine, SearchRequest
from loader.sandbox.timeutil import iso_ms, now_ms

READ_ONLY_PROPERTIES = frozenset({"hs_object_id", "hs_lastmodifieddate", "hs_createdate"})
_ENUM_OPTIONS: dict[str, frozenset[str]] = {}


@dataclass
class _Override:
    """What changed on one deal (or all of a created deal)."""

    props: dict[str, str | None] = field(default_factory=dict)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # oldest first
    updated_ms: int | None = None
    updated_seq: int = 0
    created_ms: int | None = None


@dataclass
class PortalStats:
    """Request counters of one portal."""

    requests_total: int = 0
    requests_by_path: Counter[str] = field(default_factory=Counter)
    status_counts: Counter[int] = field(default_factory=Counter)
    count_429: int = 0
    count_414: int = 0

    def to_json(self, faults_served: dict[str, int]) -> dict[str, Any]:
        """JSON-friendly snapshot."""
        return {
            "requests_total": self.requests_total,
            "requests_by_path": dict(self.requests_by_path),
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "count_429": self.count_429,
            "count_414": self.count_414,
            "faults_served": dict(faults_served),
            "faults_total": sum(faults_served.values()),
        }


def _enum_options() -> dict[str, frozenset[str]]:
    if not _ENUM_OPTIONS:
        for d in standard_definitions():
            if d["type"] in ("enumeration", "bool") and d["options"]:
                _ENUM_OPTIONS[d["name"]] = frozenset(o["value"] for o in d["options"])
    return _ENUM_OPTIONS


def encode_cursor(idx: int) -> str:
    """Opaque list cursor for "continue at deal index ``idx``"."""
    return base64.b64encode(deal_id(idx).encode()).decode()


def decode_cursor(after: str) -> int:
    """Deal index a list cursor points at; accepts our cursors and plain deal ids."""
    s = after.strip()
    if s.isdigit():
        value = s
    else:
        try:
            value = base64.b64decode(s + "=" * (-len(s) % 4), validate=False).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            value = ""
    idx = deal_index(value) if value.isdigit() else None
    if idx is None:
        raise validation_error(f"Invalid paging cursor (after): {after!r}",
                               context={"after": [after]})
    return idx


class Portal:
    """One HubSpot portal of the sandbox.

    Test helpers (all thread-safe): ``create_deal``, ``update_deal``, ``archive_deal``,
    ``set_all_lastmodified``, ``add_custom_properties``, ``rename_stage``, ``set_rate_limit``,
    the fault helpers
    (``add_fault``, ``fail_next``, ``fail_every``, ``fail_on``, ``slow_next``,
    ``truncate_next``, ``bad_shape_next``, ``clear_faults``), counters (``requests_total``,
    ``requests_by_path``, ``count_429``, ``faults_served``, ``stats()``), and readers
    (``deal``, ``deal_ids``).
    """

    def __init__(
        self, tenant: str, token: str, *, deals: int, seed: int, custom_properties: int = 0,
        rate_limit_tier: str = "off", time_scale: float = 1.0, retry_after: str = "alternate",
    ) -> None:
        if deals < 0:
            raise ValueError("deals must be >= 0")
        self.tenant = tenant
        self.token = token
        self.seed = seed
        self._lock = threading.RLock()
        self.gen = DealGenerator(seed, tenant)
        self.n_generated = deals
        self.count = deals
        self._overrides: dict[int, _Override] = {}
        self._archived: dict[int, int] = {}
        for i in range(deals):
            if self.gen.is_archived(i):
                self._archived[i] = -1  # archivedAt computed lazily from the record
        self._archived_sorted = sorted(self._archived)
        self._bulk: tuple[int, int] | None = None  # (updated_ms, seq) applied to every deal
        self._seq = 0
        self._last_write_ms = 0
        self._extra_count = 0
        self._extra_index: dict[str, int] = {}
        self._props_cache: bytes | None = None
        #: Stage labels changed from the catalog's: (pipeline id, stage id) -> label.
        self._stage_labels: dict[tuple[str, str], str] = {}
        self._pipelines_cache: bytes | None = None
        self.version = 0
        self.search = SearchEngine(self)
        self.limiter = RateLimiter(tenant, rate_limit_tier, time_scale, retry_after)
        self.faults = FaultInjector()
        self.stats_data = PortalStats()
        if custom_properties:
            self.add_custom_properties(custom_properties)

    # ------------------------------------------------------------------ schema

    def property_type(self, name: str) -> str | None:
        """HubSpot type of a defined deal property; None when the portal has no such property."""
        t = PROPERTY_TYPES.get(name)
        if t is not None:
            return t
        k = self._extra_index.get(name)
        return None if k is None else extra_property_type(k)

    def add_custom_properties(self, n: int) -> list[str]:
        """Define ``n`` more custom deal properties; returns their names."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            start = self._extra_count
            names = [extra_property_name(k) for k in range(start, start + n)]
            for k, name in enumerate(names, start):
                self._extra_index[name] = k
            self._extra_count += n
            self._props_cache = None
            self._touch()
            return names

    def rename_stage(self, pipeline_id: str, stage_id: str, label: str) -> None:
        """Give a stage of a deal pipeline a new label, as a portal's admin does in HubSpot's
        settings (the pipelines endpoints answer with it from then on)."""
        known = {(p.id, s.id) for p in PIPELINES for s in p.stages}
        if (pipeline_id, stage_id) not in known:
            raise ValueError(f"no stage {stage_id!r} in pipeline {pipeline_id!r}")
        with self._lock:
            self._stage_labels[(pipeline_id, stage_id)] = label
            self._pipelines_cache = None

    def pipelines(self) -> list[dict[str, Any]]:
        """The portal's deal pipelines in HubSpot's ``Pipeline`` shape."""
        with self._lock:
            labels = dict(self._stage_labels)
        result = []
        for p in PIPELINES:
            body = pipeline_json(p)
            for stage in body["stages"]:
                stage["label"] = labels.get((p.id, stage["id"]), stage["label"])
            result.append(body)
        return result

    def pipelines_body(self) -> bytes:
        """``GET /crm/v3/pipelines/deals``'s body (kept until a stage is renamed)."""
        with self._lock:
            if self._pipelines_cache is None:
                self._pipelines_cache = orjson.dumps({"results": self.pipelines()})
            return self._pipelines_cache

    @property
    def custom_property_names(self) -> list[str]:
        """Names of the extra generated custom properties."""
        with self._lock:
            return list(self._extra_index)

    def properties_json(self) -> bytes:
        """Body of ``GET /crm/v3/properties/deals`` (cached)."""
        with self._lock:
            if self._props_cache is None:
                defs = standard_definitions()
                defs.extend(extra_definition(k) for k in range(self._extra_count))
                self._props_cache = orjson.dumps({"results": defs})
            return self._props_cache

    def property_definition(self, name: str) -> dict[str, Any] | None:
        """One property definition, or None."""
        with self._lock:
            k = self._extra_index.get(name)
            if k is not None:
                return extra_definition(k)
        for d in standard_definitions():
            if d["name"] == name:
                return d
        return None

    # ------------------------------------------------------------------ records

    def _touch(self, idx: int | None = None) -> None:
        self.version += 1
        self.search.invalidate(idx)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _write_time(self, at_ms: int | None) -> int:
        if at_ms is not None:
            return int(at_ms)
        t = max(now_ms(), self._last_write_ms + 1)
        self._last_write_ms = t
        return t

    def _exists(self, idx: int | None) -> bool:
        return idx is not None and 0 <= idx < self.count

    def is_archived(self, idx: int) -> bool:
        """Whether deal ``idx`` is archived (search protocol)."""
        return idx in self._archived

    def _base(self, idx: int) -> BaseDeal | None:
        return self.gen.base(idx) if idx < self.n_generated else None

    def _record(self, idx: int
                ) -> tuple[dict[str, str | None], int, int, BaseDeal | None, str, str]:
        """Effective (base properties, createdAt ms, updatedAt ms, generated base,
        createdAt ISO, updatedAt ISO)."""
        base = self._base(idx)
        ov = self._overrides.get(idx)
        if base is not None:
            # Freshly generated for this call; copied only when changes are layered on top,
            # so base.props keeps the generated values (history needs them).
            props = base.props if ov is None else dict(base.props)
            created, updated = base.created_ms, base.updated_ms
            created_iso, updated_iso = base.created_iso, base.updated_iso
        else:
            assert ov is not None and ov.created_ms is not None
            props = dict.fromkeys(BASE_PROPERTY_NAMES)
            created = updated = ov.created_ms
            created_iso = updated_iso = iso_ms(created)
        if ov is not None and ov.props:
            for k, v in ov.props.items():
                if k in props:
                    props[k] = v
        updated, changed = self._updated_ms(ov, updated)
        if changed:
            updated_iso = iso_ms(updated)
        props["hs_lastmodifieddate"] = updated_iso
        return props, created, updated, base, created_iso, updated_iso

    def _updated_ms(self, ov: _Override | None, updated: int) -> tuple[int, bool]:
        """Effective updatedAt given the generated/created one, and whether it changed."""
        seq, changed = 0, False
        if ov is not None and ov.updated_ms is not None:
            updated, seq, changed = ov.updated_ms, ov.updated_seq, True
        if self._bulk is not None and self._bulk[1] > seq:
            updated, changed = self._bulk[0], True
        return updated, changed

    fast_columns = frozenset({"createdate", "hs_createdate", "hs_lastmodifieddate"})
    """Properties whose effective value is computed without generating the whole deal."""

    def _times(self, idx: int, ov: _Override | None) -> tuple[int, int]:
        """Deal ``idx``'s createdAt and its updatedAt before any change (ms), without
        generating the rest of it (``ov``: its changes)."""
        if idx < self.n_generated:
            return self.gen.timestamps(idx)
        assert ov is not None and ov.created_ms is not None
        return ov.created_ms, ov.created_ms

    def fast_value(self, idx: int, name: str) -> str | None:
        """Effective value of one of ``fast_columns`` on deal ``idx`` (search protocol)."""
        ov = self._overrides.get(idx)
        if name == "hs_lastmodifieddate" and (
                self._bulk is not None or (ov is not None and ov.updated_ms is not None)):
            # A change or a stamp decides it: the generated time is not needed (the search
            # columns refresh every changed deal before the next search).
            return iso_ms(self._updated_ms(ov, 0)[0])
        created, updated = self._times(idx, ov)
        if name == "hs_lastmodifieddate":
            return iso_ms(self._updated_ms(ov, updated)[0])
        if ov is not None and name in ov.props:
            return ov.props[name]
        return iso_ms(created)

    def record_values(self, idx: int) -> dict[str, str | None]:
        """Effective base property values of deal ``idx`` (search protocol)."""
        return self._record(idx)[0]

    def extra_values(self, idx: int, name: str) -> str | None:
        """Effective value of an extra custom property (search protocol)."""
        ov = self._overrides.get(idx)
        if ov is not None and name in ov.props:
            return ov.props[name]
        k = self._extra_index.get(name)
        if k is None or idx >= self.n_generated:
            return None
        return self.gen.extra_value(idx, k)

    def _archived_at(self, idx: int, updated: int) -> int:
        at = self._archived[idx]
        return self.gen.archived_at_ms(idx, updated) if at < 0 else at

    def resolve_properties(self, names: list[str] | None) -> list[str]:
        """Requested property names that exist on this portal (unknown ones are ignored, as
        HubSpot does); the default set when ``names`` is None."""
        if names is None:
            return list(DEFAULT_PROPERTIES)
        out: list[str] = []
        seen: set[str] = set()
        for n in names:
            if n not in seen and (n in PROPERTY_TYPES or n in self._extra_index):
                seen.add(n)
                out.append(n)
        return out

    def _history(self, idx: int, name: str, value: str | None, base: BaseDeal | None,
                 updated: int) -> list[dict[str, Any]]:
        ov = self._overrides.get(idx)
        if name == "hs_lastmodifieddate":
            return [{"value": value, "timestamp": iso_ms(updated), "sourceType": "CALCULATED",
                     "sourceId": "CalculatedPropertyComputer"}]
        newer = list(reversed(ov.history.get(name, []))) if ov is not None else []
        if base is None:
            return newer
        if name in base.props:
            older = self.gen.history(idx, name, base)
        else:
            v = self.gen.extra_value(idx, self._extra_index[name])
            older = [] if v is None else [
                {"value": v, "timestamp": iso_ms(base.created_ms), "sourceType": "CRM_UI"}]
        return newer + older

    #: Properties a deal is rendered with, without generating it, when they are all that is
    #: asked for (no history): its id and ``fast_columns``.
    id_columns = fast_columns | {"hs_object_id"}

    def render(self, idx: int, names: list[str], history: list[str] | None = None
               ) -> dict[str, Any]:
        """Deal ``idx`` in the spec's SimplePublicObject shape. Caller holds the lock."""
        if not history and self.id_columns.issuperset(names):
            return self._render_ids(idx, names)
        props, created, updated, base, created_iso, updated_iso = self._record(idx)
        out: dict[str, str | None] = {}
        extra_index = self._extra_index
        for name in names:
            if name in props:
                out[name] = props[name]
            elif name in extra_index:
                out[name] = self.extra_values(idx, name)
        obj: dict[str, Any] = {
            "id": deal_id(idx),
            "properties": out,
            "createdAt": created_iso,
            "updatedAt": updated_iso,
            "archived": idx in self._archived,
        }
        if idx in self._archived:
            obj["archivedAt"] = iso_ms(
                self._archived_at(idx, base.updated_ms if base is not None else updated))
        if history:
            obj["propertiesWithHistory"] = {
                name: self._history(idx, name,
                                    props[name] if name in props else out.get(name),
                                    base, updated)
                for name in history
            }
        return obj

    def _render_ids(self, idx: int, names: list[str]) -> dict[str, Any]:
        """``render`` for ``id_columns`` only (an archived walk's pages, for one): the same
        object from the deal's timestamps and changes, without generating the deal's other
        properties (100 archived deals in 1.2 ms instead of 2.7)."""
        ov = self._overrides.get(idx)
        created, generated_updated = self._times(idx, ov)
        updated = self._updated_ms(ov, generated_updated)[0]
        ident = deal_id(idx)
        out: dict[str, str | None] = {}
        for name in names:
            if name == "hs_object_id":
                out[name] = ov.props.get(name, ident) if ov is not None else ident
            else:
                out[name] = self.fast_value(idx, name)
        obj: dict[str, Any] = {
            "id": ident,
            "properties": out,
            "createdAt": iso_ms(created),
            "updatedAt": iso_ms(updated),
            "archived": idx in self._archived,
        }
        if idx in self._archived:
            obj["archivedAt"] = iso_ms(self._archived_at(
                idx, generated_updated if idx < self.n_generated else updated))
        return obj

    # ------------------------------------------------------------------ reads used by routes

    def list_page(self, after: str | None, limit: int, archived: bool
                  ) -> tuple[list[int], int | None]:
        """Indices of one list page in id order and the index the next page starts at."""
        with self._lock:
            start = decode_cursor(after) if after else 0
            if archived:
                pos = bisect.bisect_left(self._archived_sorted, start)
                chunk = self._archived_sorted[pos:pos + limit + 1]
                page = chunk[:limit]
                nxt = chunk[limit] if len(chunk) > limit else None
                return page, nxt
            page: list[int] = []
            i = start
            count, arch = self.count, self._archived
            while i < count and len(page) < limit:
                if i not in arch:
                    page.append(i)
                i += 1
            while i < count and i in arch:
                i += 1
            return page, (i if i < count else None)

    def find(self, deal_id_str: str, archived: bool = False) -> int:
        """Index of a deal that exists with the requested archived state, else 404."""
        idx = deal_index(deal_id_str)
        with self._lock:
            if not self._exists(idx) or (idx in self._archived) != archived:
                raise not_found(deal_id_str)
            assert idx is not None
            return idx

    def run_search(self, req: SearchRequest) -> tuple[list[int], int]:
        """One page of a search: (indices, total)."""
        with self._lock:
            matched = self.search.matches(req)
            return matched[req.after:req.after + req.limit], len(matched)

    # ------------------------------------------------------------------ writes

    def _validate_props(self, props: Any) -> dict[str, str | None]:
        if not isinstance(props, dict):
            raise validation_error("properties must be an object")
        clean: dict[str, str | None] = {}
        errors = []
        options = _enum_options()
        for name, value in props.items():
            ptype = self.property_type(name)
            if ptype is None:
                errors.append({"isValid": False, "message": f'Property "{name}" does not exist',
                               "error": "PROPERTY_DOESNT_EXIST", "name": name})
                continue
            if name in READ_ONLY_PROPERTIES:
                errors.append({"isValid": False, "message": f'"{name}" is a read only property; '
                               "its value cannot be set.", "error": "READ_ONLY_VALUE",
                               "name": name})
                continue
            if value is None:
                clean[name] = None
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (int, float)):
                value = str(value)
            elif not isinstance(value, str):
                errors.append({"isValid": False, "message": f"{value!r} is not a valid value",
                               "error": "INVALID_VALUE", "name": name})
                continue
            opts = options.get(name)
            if value != "" and opts is not None and value not in opts:
                errors.append({"isValid": False, "message": f"{value} was not one of the allowed "
                               f"options: {sorted(opts)}", "error": "INVALID_OPTION",
                               "name": name})
                continue
            clean[name] = value
        if errors:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Property values were not valid: " + orjson.dumps(errors).decode(),
                           context={"properties": [e["name"] for e in errors]})
        return clean

    @staticmethod
    def _apply_derived(changes: dict[str, str | None], current: dict[str, str | None]) -> None:
        """Keep stage-derived properties consistent, as HubSpot's calculated properties do."""
        if "dealstage" not in changes and "pipeline" not in changes:
            return
        stage_id = changes.get("dealstage", current.get("dealstage"))
        pipeline_id = changes.get("pipeline", current.get("pipeline")) or DEFAULT_PIPELINE.id
        pipeline = next((p for p in PIPELINES if p.id == pipeline_id), DEFAULT_PIPELINE)
        if stage_id is None:
            stage_id = pipeline.stages[0].id
            changes["dealstage"] = stage_id
        if stage_id not in {s.id for s in pipeline.stages}:
            raise validation_error(
                f"{stage_id} is not a valid deal stage for pipeline {pipeline.id}",
                context={"dealstage": [str(stage_id)]})
        stage = STAGES_BY_ID[stage_id]
        changes.setdefault("pipeline", pipeline.id)
        changes["hs_is_closed"] = "true" if stage.is_closed else "false"
        changes["hs_is_closed_won"] = "true" if stage.is_won else "false"
        p = stage.probability
        changes["hs_deal_stage_probability"] = "0" if p == "0.0" else p.rstrip("0").rstrip(".")

    def _record_changes(self, ov: _Override, changes: dict[str, str | None], at: int,
                        source: str) -> None:
        for name, value in changes.items():
            ov.props[name] = value
            if value is not None:
                ov.history.setdefault(name, []).append(
                    {"value": value, "timestamp": iso_ms(at), "sourceType": source})
        ov.updated_ms = at
        ov.updated_seq = self._next_seq()

    def create_deal(self, props: dict[str, Any] | None = None, *, at_ms: int | None = None
                    ) -> str:
        """Create a deal (as ``POST /crm/v3/objects/deals``); returns its id."""
        with self._lock:
            changes = self._validate_props(props or {})
            at = self._write_time(at_ms)
            idx = self.count
            changes.setdefault("pipeline", DEFAULT_PIPELINE.id)
            self._apply_derived(changes, {})
            created_iso = iso_ms(at)
            defaults: dict[str, str | None] = {
                "createdate": created_iso, "hs_createdate": created_iso,
                "hs_object_id": deal_id(idx), "hs_object_source": "API",
                "hs_num_of_associated_line_items": "0", "num_associated_contacts": "0",
                "num_contacted_notes": "0", "num_notes": "0",
                "hs_closed_amount": "0",
            }
            for k, v in defaults.items():
                changes.setdefault(k, v)
            ov = _Override(created_ms=at)
            self._record_changes(ov, changes, at, "API")
            self._overrides[idx] = ov
            self.count += 1
            self._touch(idx)
            return deal_id(idx)

    def update_deal(self, deal_id_str: str, props: dict[str, Any], *, at_ms: int | None = None
                    ) -> None:
        """Change properties of a live deal; bumps hs_lastmodifieddate/updatedAt."""
        with self._lock:
            idx = self.find(deal_id_str, archived=False)
            changes = self._validate_props(props)
            current = self._record(idx)[0]
            self._apply_derived(changes, current)
            at = self._write_time(at_ms)
            ov = self._overrides.setdefault(idx, _Override())
            self._record_changes(ov, changes, at, "API")
            self._touch(idx)

    def archive_deal(self, deal_id_str: str, *, at_ms: int | None = None) -> bool:
        """Archive a deal (does not bump hs_lastmodifieddate). False if already archived."""
        with self._lock:
            idx = deal_index(deal_id_str)
            if not self._exists(idx):
                raise not_found(deal_id_str)
            assert idx is not None
            if idx in self._archived:
                return False
            self._archived[idx] = self._write_time(at_ms)
            bisect.insort(self._archived_sorted, idx)
            self._touch(None)
            return True

    def set_all_lastmodified(self, ms: int, ids: list[str] | None = None) -> int:
        """Give many deals (all, or ``ids``) the same hs_lastmodifieddate; returns how many.

        Later writes to a deal supersede this stamp, as they would in HubSpot.
        """
        with self._lock:
            ms = int(ms)
            seq = self._next_seq()
            iso = iso_ms(ms)
            if ids is None:
                self._bulk = (ms, seq)
                self.version += 1
                self.search.store.set_all("hs_lastmodifieddate", iso)
                self.search.invalidate(None)
                return self.count
            indices = []
            for d in ids:
                idx = deal_index(d)
                if not self._exists(idx):
                    raise not_found(d)
                assert idx is not None
                ov = self._overrides.setdefault(idx, _Override())
                ov.updated_ms, ov.updated_seq = ms, seq
                indices.append(idx)
            self.version += 1
            self.search.store.set_all("hs_lastmodifieddate", iso, indices)
            self.search.invalidate(None)
            return len(indices)

    # ------------------------------------------------------------------ readers for tests

    def deal(self, deal_id_str: str) -> dict[str, Any]:
        """A deal with every property (archived or not), in the API's object shape."""
        with self._lock:
            idx = deal_index(deal_id_str)
            if not self._exists(idx):
                raise KeyError(deal_id_str)
            assert idx is not None
            names = list(BASE_PROPERTY_NAMES) + list(self._extra_index)
            return self.render(idx, names)

    def deal_ids(self, archived: bool = False) -> list[str]:
        """Ids of all live (or all archived) deals, ascending."""
        with self._lock:
            if archived:
                return [deal_id(i) for i in self._archived_sorted]
            return [deal_id(i) for i in range(self.count) if i not in self._archived]

    # ------------------------------------------------------------------ limits and faults

    def set_rate_limit(self, tier: str | None = None, *, time_scale: float | None = None,
                       retry_after: str | None = None, reset: bool = False) -> None:
        """Switch the rate-limit tier ("off", "free", "starter", "pro", "enterprise"), the
        time scale, or the Retry-After mode ("alternate", "always", "never")."""
        with self._lock:
            self.limiter.configure(tier=tier, time_scale=time_scale, retry_after=retry_after)
            if reset:
                self.limiter.reset()

    def check_rate(self, *, is_search: bool) -> Decision:
        """Count a request against the limits (used by the server)."""
        with self._lock:
            d = self.limiter.check(is_search=is_search)
            if not d.allowed:
                self.stats_data.count_429 += 1
            return d

    def add_fault(self, kind: str, **kw: Any) -> int:
        """Add a fault rule (see ``faults.py``); returns its id."""
        with self._lock:
            return self.faults.add(kind, **kw).id

    def fail_next(self, k: int = 1, status: int = 503, **kw: Any) -> int:
        """The next ``k`` requests answer ``status``."""
        return self.add_fault("status", count=k, status=status, **kw)

    def fail_every(self, n: int, status: int = 500, **kw: Any) -> int:
        """Every ``n``-th request answers ``status``."""
        return self.add_fault("status", every=n, status=status, **kw)

    def fail_on(self, numbers: list[int] | int, status: int = 503, **kw: Any) -> int:
        """Requests with these (1-based) numbers answer ``status``."""
        return self.add_fault("status", on=numbers, status=status, **kw)

    def slow_next(self, k: int, seconds: float, **kw: Any) -> int:
        """The next ``k`` requests wait ``seconds`` before answering."""
        return self.add_fault("delay", count=k, delay=seconds, **kw)

    def truncate_next(self, k: int = 1, mode: str = "connection", **kw: Any) -> int:
        """The next ``k`` responses are cut: ``connection`` (closed mid-body) or ``json``."""
        kind = {"connection": "truncate", "json": "truncate_json"}[mode]
        return self.add_fault(kind, count=k, **kw)

    def bad_shape_next(self, k: int = 1, mode: str = "json", **kw: Any) -> int:
        """The next ``k`` responses are 200s with a non-HubSpot body (``json`` or ``html``)."""
        kind = {"json": "bad_json", "html": "html"}[mode]
        return self.add_fault(kind, count=k, **kw)

    def clear_faults(self) -> None:
        """Remove all fault rules."""
        with self._lock:
            self.faults.clear()

    def fault_rules(self) -> list[dict[str, Any]]:
        """Active fault rules."""
        with self._lock:
            return [r.to_json() for r in self.faults.rules]

    def pick_fault(self, number: int, method: str, path: str) -> tuple[float, FaultRule | None]:
        """Consume fault rules for a request (used by the server)."""
        with self._lock:
            return self.faults.pick(number, method, path)

    # ------------------------------------------------------------------ counters

    def count_request(self, route: str) -> int:
        """Count an authenticated request; returns its 1-based number."""
        with self._lock:
            self.stats_data.requests_total += 1
            self.stats_data.requests_by_path[route] += 1
            return self.stats_data.requests_total

    def count_status(self, status: int) -> None:
        """Count a response status."""
        with self._lock:
            self.stats_data.status_counts[status] += 1
            if status == 414:
                self.stats_data.count_414 += 1

    @property
    def requests_total(self) -> int:
        """Authenticated requests served (all statuses)."""
        return self.stats_data.requests_total

    @property
    def requests_by_path(self) -> dict[str, int]:
        """Requests per route ("GET /crm/v3/objects/deals", ...)."""
        with self._lock:
            return dict(self.stats_data.requests_by_path)

    @property
    def count_429(self) -> int:
        """429 answers sent."""
        return self.stats_data.count_429

    @property
    def faults_served(self) -> dict[str, int]:
        """Faults served by kind ("status:503", "truncate", "delay", ...)."""
        with self._lock:
            return dict(self.faults.served)

    def stats(self) -> dict[str, Any]:
        """All counters plus portal facts, JSON-friendly."""
        with self._lock:
            out = self.stats_data.to_json(self.faults.served)
            out.update({
                "tenant": self.tenant,
                "deals_total": self.count,
                "deals_archived": len(self._archived),
                "custom_properties": self._extra_count,
                "rate_limit_tier": self.limiter.tier.name if self.limiter.tier else "off",
                "time_scale": self.limiter.time_scale,
                "daily_used": self.limiter.daily_used,
                "fault_rules": [r.to_json() for r in self.faults.rules],
            })
            return out

    def reset_stats(self) -> None:
        """Zero the counters (fault rules and data stay)."""
        with self._lock:
            self.stats_data = PortalStats()
            self.faults.served.clear()

    @property
    def lock(self) -> threading.RLock:
        """The portal lock (hold it while rendering several deals consistently)."""
        return self._lock
