"""Tenant-scoped reads of the analytics marts for applications: the seed's common deal queries.

Every read is one transaction that first sets the tenant for that transaction only::

    select set_config('app.current_tenant_id', %s, true)

and then queries ``analytics.deals`` (and the analyst views built on it) through row-level
security: the marts' ``tenant_isolation_policy`` compares ``_tenant_id`` with that setting.
When the connecting role owns the marts (or is a superuser) RLS would not apply to it, so the
transaction also takes the NOLOGIN analyst role with ``set local role`` when the session may; the
queries additionally name the tenant setting in their own ``where`` (defence in depth and index
use), never a literal tenant id.

Safe behind a transaction-pooling pooler (PgBouncer ``pool_mode = transaction``): nothing is kept
in the session between transactions (``set_config(..., true)`` and ``set local`` end with the
transaction), and psycopg2 sends plain queries, no server-side prepared statements.

Pagination is keyset, not OFFSET: a page ends with an opaque cursor (the last row's sort key)
that the next call passes as ``after``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import psycopg2.extensions
import psycopg2.extras

from . import db
from .errors import UsageError
from .ids import validate_scan_id, validate_tenant_id

ANALYST_ROLE = "hubspot_analyst"
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

#: The tenant of the current transaction, as the RLS policies read it.
CURRENT_TENANT = "nullif(current_setting('app.current_tenant_id', true), '')"

DEAL_COLUMNS = (
    "id", "_scan_id", "dealname", "amount", "dealstage", "pipeline", "createdate", "closedate",
    "dealtype", "archived",
)

#: Keyset order of deal pages: newest created first (deals without a createdate last), then id.
_SORT_KEY = "coalesce(createdate, '-infinity'::timestamp)"
_DATE_FIELDS = ("closedate", "createdate")


@dataclass
class DealFilter:
    """Filters of a deals page; all optional and combined with AND."""

    scan_id: str | None = None
    stage: str | None = None
    pipeline: str | None = None
    search: str | None = None
    date_field: str = "closedate"
    date_from: date | datetime | None = None
    date_to: date | datetime | None = None
    properties: dict[str, str] = field(default_factory=dict)
    include_archived: bool = False


@dataclass
class Page:
    """One page of rows, and the cursor of the next page (None on the last one)."""

    rows: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(createdate: datetime | None, deal_id: str) -> str:
    """The opaque cursor after a row (url-safe, no padding)."""
    key = [createdate.isoformat() if createdate else None, deal_id]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """(sort timestamp as ISO text, id) from a cursor; a one-line error if it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, deal_id = json.loads(raw)
        if created is not None:
            datetime.fromisoformat(created)
        if not isinstance(deal_id, str):
            raise ValueError(deal_id)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise UsageError(
            f"invalid page cursor {cursor[:40]!r}: pass a next_cursor as given"
        ) from None
    return created or "-infinity", deal_id


def _like_pattern(text: str) -> str:
    """``%text%`` for ILIKE with the user's ``%``, ``_`` and ``\\`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class DealReader:
    """Tenant-scoped reads for one tenant. One connection, one transaction per call.

    ``url`` defaults to the URL in use (``DATABASE_URL`` or the embedded server). ``role`` is the
    role each transaction takes with ``set local role`` when the login role may (the analyst role
    by default); None to query as the login role itself.
    """

    def __init__(self, tenant_id: str, url: str | None = None,
                 role: str | None = ANALYST_ROLE) -> None:
        self.tenant_id = validate_tenant_id(tenant_id)
        self.url = url
        self.role = role
        self._conn: psycopg2.extensions.connection | None = None
        self._take_role: bool | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> DealReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.cursor]:
        """A read-only transaction scoped to the tenant (committed or rolled back at the end)."""
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.url)
        with self._conn, self._conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("set transaction read only")
            cur.execute("select set_config('app.current_tenant_id', %s, true)", (self.tenant_id,))
            if self.role and self._may_take_role(cur):
                cur.execute(f"set local role {psycopg2.extensions.quote_ident(self.role, cur)}")
            yield cur

    def _may_take_role(self, cur: psycopg2.extensions.cursor) -> bool:
        if self._take_role is None:
            cur.execute(
                "select to_regrole(%s) is not null and current_user::regrole <> to_regrole(%s) "
                "and pg_has_role(current_user, to_regrole(%s), 'MEMBER') as ok",
                (self.role, self.role, self.role),
            )
            self._take_role = bool(cur.fetchone()["ok"])
        return self._take_role

    # --- the seed's common queries ------------------------------------------------------------

    def deals(self, filters: DealFilter | None = None, *, limit: int = DEFAULT_LIMIT,
              after: str | None = None) -> Page:
        """A page of deals, newest created first (keyset pagination; ``after`` = a cursor)."""
        limit = _check_limit(limit)
        sql, params = deals_query(filters or DealFilter(), limit + 1, after)
        with self.transaction() as cur:
            cur.execute(sql, params)
            rows = [dict(r) for r in cur.fetchall()]
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = encode_cursor(_finite(rows[-1]["_sort_key"]), rows[-1]["id"]) \
            if more and rows else None
        for row in rows:
            row.pop("_sort_key")
        return Page(rows, cursor)

    def deals_of_scan(self, scan_id: str, *, limit: int = DEFAULT_LIMIT,
                      after: str | None = None) -> Page:
        """The deals whose current version came from ``scan_id`` (paginated)."""
        return self.deals(DealFilter(scan_id=scan_id, include_archived=True),
                          limit=limit, after=after)

    def search_by_name(self, text: str, *, limit: int = DEFAULT_LIMIT,
                       after: str | None = None) -> Page:
        """Deals whose name contains ``text`` (case-insensitive; ``%``/``_`` literal)."""
        return self.deals(DealFilter(search=text), limit=limit, after=after)

    def deals_between(self, date_from: date | datetime | None, date_to: date | datetime | None,
                      *, date_field: str = "closedate", limit: int = DEFAULT_LIMIT,
                      after: str | None = None) -> Page:
        """Live deals with ``date_from <= date_field < date_to`` (either bound optional)."""
        return self.deals(DealFilter(date_field=date_field, date_from=date_from, date_to=date_to),
                          limit=limit, after=after)

    def deals_with_property(self, key: str, value: str, *, limit: int = DEFAULT_LIMIT,
                            after: str | None = None) -> Page:
        """Deals whose ``properties ->> key = value`` (``@>``, so the GIN index serves it)."""
        return self.deals(DealFilter(properties={key: value}, include_archived=True),
                          limit=limit, after=after)

    def count_by_stage(self) -> list[dict[str, Any]]:
        """Live deals per stage, most first: stage, label, count, total amount
        (``analytics.deals_by_stage``)."""
        with self.transaction() as cur:
            cur.execute(
                "select dealstage, stage_label, deal_count, total_amount "
                f"from analytics.deals_by_stage where _tenant_id = {CURRENT_TENANT} "
                "order by deal_count desc, dealstage"
            )
            return [dict(r) for r in cur.fetchall()]

    def pipeline_stage_summary(self, pipeline: str | None = None) -> list[dict[str, Any]]:
        """Live deals per pipeline and stage in HubSpot's display order: labels, count, total
        and average amount (``analytics.pipeline_stage_summary``); one pipeline or all."""
        sql = (
            "select pipeline, pipeline_label, dealstage, stage_label, deal_count, total_amount, "
            "average_amount from analytics.pipeline_stage_summary "
            f"where _tenant_id = {CURRENT_TENANT}"
        )
        params: list[Any] = []
        if pipeline is not None:
            sql += " and pipeline = %s"
            params.append(pipeline)
        sql += " order by pipeline_display_order, pipeline, stage_display_order, dealstage"
        with self.transaction() as cur:
            cur.execute(sql, params)
            return [dict(r) for r in cur.fetchall()]

    def closed_by_month(self, since: date | datetime | None = None) -> list[dict[str, Any]]:
        """Live deals with a close date per month, newest month first: count and revenue
        (``analytics.closed_deals_by_month``); from the month of ``since`` on."""
        sql = (
            "select month, closed_deals, total_revenue, won_deals, won_revenue "
            f"from analytics.closed_deals_by_month where _tenant_id = {CURRENT_TENANT}"
        )
        params: list[Any] = []
        if since is not None:
            sql += " and month >= date_trunc('month', %s::timestamp)"
            params.append(since)
        with self.transaction() as cur:
            cur.execute(f"{sql} order by month desc", params)
            return [dict(r) for r in cur.fetchall()]


def deals_query(filters: DealFilter, limit: int, after: str | None = None
                ) -> tuple[str, list[Any]]:
    """The SQL and parameters of a deals page (exposed so its plan can be inspected)."""
    where, params = _deal_conditions(filters)
    if after:
        created, deal_id = decode_cursor(after)
        where.append(f"({_SORT_KEY}, id) < (%s::timestamp, %s)")
        params += [created, deal_id]
    sql = (
        f"select {', '.join(DEAL_COLUMNS)}, {_SORT_KEY} as _sort_key from analytics.deals "
        f"where {' and '.join(where)} order by {_SORT_KEY} desc, id desc limit %s"
    )
    return sql, [*params, limit]


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def _finite(value: Any) -> datetime | None:
    """The sort key as a datetime, None for the '-infinity' of deals without a createdate."""
    return value if isinstance(value, datetime) and value != datetime.min else None


def _deal_conditions(filters: DealFilter) -> tuple[list[str], list[Any]]:
    where = [f"_tenant_id = {CURRENT_TENANT}"]
    params: list[Any] = []
    if not filters.include_archived:
        where.append("not archived")
    if filters.scan_id is not None:
        where.append("_scan_id = %s")
        params.append(validate_scan_id(filters.scan_id))
    if filters.stage is not None:
        where.append("dealstage = %s")
        params.append(filters.stage)
    if filters.pipeline is not None:
        where.append("pipeline = %s")
        params.append(filters.pipeline)
    if filters.search:
        where.append("dealname ilike %s")
        params.append(_like_pattern(filters.search))
    if filters.date_from is not None or filters.date_to is not None:
        if filters.date_field not in _DATE_FIELDS:
            raise UsageError(f"date field must be one of {', '.join(_DATE_FIELDS)}")
        if filters.date_from is not None:
            where.append(f"{filters.date_field} >= %s")
            params.append(filters.date_from)
        if filters.date_to is not None:
            where.append(f"{filters.date_field} < %s")
            params.append(filters.date_to)
    if filters.properties:
        where.append("properties @> %s::jsonb")
        params.append(json.dumps(filters.properties))
    return where, params
