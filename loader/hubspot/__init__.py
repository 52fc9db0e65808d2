"""dlt source for HubSpot CRM deals (API v3), multi-tenant and incremental.

Resources (all land in the dataset ``raw_hubspot``, every row stamped with ``_tenant_id``,
``_scan_id``, ``_scan_job_id`` and ``_extracted_at``):

- ``deals``: every deal with all of its properties kept whole as one JSON value; the stage history
  of ``dealstage`` as the table ``deals_stage_history``. Both are yielded as Arrow tables
  (``records.deal_batch``), which dlt writes without normalising row by row. The first scan of a
  tenant (and ``full_refresh``) reads every deal from the list endpoint; later scans search on
  ``hs_lastmodifieddate`` from the cursor (the latest ``updated_at`` stored, kept in the
  resource's state and committed with the rows), re-reading a lookback window for HubSpot's
  search-index lag. Archived deals are listed each scan too (``archived=true``), so deletions
  reach the warehouse; an incremental scan lands only those archived since the last complete
  pass over that list, less the lookback (its own cursor, ``archived_through`` in the state of
  ``archived_deals``): the others are already stored, and cannot change while archived.
- ``deals_rejected``: records HubSpot sent that we could not store, kept whole with the reason.
- ``pipelines``: deal pipelines with their stages (child table ``pipelines__stages``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import dlt
import pyarrow as pa
from dlt.common.schema.typing import TTableSchemaColumns

from . import settings
from .helpers import HubSpotClient
from .records import DealBatch, Stamp, deal_batch, parse_hubspot_datetime

SOURCE_NAME = "hubspot"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_STAMP_COLUMNS: TTableSchemaColumns = {
    "_tenant_id": {"data_type": "text", "nullable": False},
    "_scan_id": {"data_type": "text", "nullable": False},
    "_scan_job_id": {"data_type": "text", "nullable": False},
    "_extracted_at": {"data_type": "timestamp", "nullable": False},
}

DEAL_COLUMNS: TTableSchemaColumns = {
    "id": {"data_type": "text", "nullable": False},
    "properties": {"data_type": "json"},
    "created_at": {"data_type": "timestamp"},
    "updated_at": {"data_type": "timestamp", "nullable": False},
    "archived": {"data_type": "bool"},
    "archived_at": {"data_type": "timestamp"},
    **_STAMP_COLUMNS,
}

#: The stage history, one row per entry, pointing at its deal row's ``_dlt_id`` with the columns
#: dlt's unnesting of a list would give a child table (written by the source itself, as Arrow:
#: a root table, so its name has one underscore where a dlt child table's would have two).
STAGE_HISTORY_TABLE = "deals_stage_history"
STAGE_HISTORY_COLUMNS: TTableSchemaColumns = {
    "value": {"data_type": "text"},
    "changed_at": {"data_type": "timestamp"},
    "source_type": {"data_type": "text"},
    "_dlt_root_id": {"data_type": "text", "nullable": False},
    "_dlt_parent_id": {"data_type": "text", "nullable": False},
    "_dlt_list_idx": {"data_type": "bigint", "nullable": False},
    "_dlt_id": {"data_type": "text", "nullable": False, "unique": True, "row_key": True},
}

REJECTED_COLUMNS: TTableSchemaColumns = {
    "deal_id": {"data_type": "text"},
    "reason": {"data_type": "text", "nullable": False},
    "payload": {"data_type": "json"},
    **_STAMP_COLUMNS,
}


class _ArrowJsonHintFilter(logging.Filter):
    """Drops dlt's warning, logged for every Arrow batch, that a column hint overrides the Arrow
    type: ``properties`` is JSON text in Arrow (which has no JSON type dlt maps) and the ``json``
    hint types it ``jsonb`` in PostgreSQL, as intended."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "when merging arrow schema with dlt schema" not in str(record.msg)


logging.getLogger("dlt").addFilter(_ArrowJsonHintFilter())


class Progress(Protocol):
    """What the source reports to the scan job as it runs."""

    def on_total(self, total: int) -> None:
        """HubSpot told how many deals to expect."""

    def taken(self, processed: int, failed: int) -> None:
        """dlt takes a batch of ``processed``/``failed`` more records (reported, perhaps while
        the source goes on; :meth:`may_continue` waits for the report)."""

    def may_continue(self) -> bool:
        """Whether the source may take another batch: False once the scan was cancelled."""

    @property
    def cancelled(self) -> bool:
        """True once the scan was cancelled: no resource may yield another batch."""


class _Cancelled(Exception):
    """Raised inside a resource when the scan job was cancelled."""


class _NoProgress:
    cancelled = False

    def on_total(self, total: int) -> None:
        pass

    def taken(self, processed: int, failed: int) -> None:
        pass

    def may_continue(self) -> bool:
        return True


@dlt.source(name=SOURCE_NAME, max_table_nesting=1, root_key=True)
def hubspot_deals(
    client: HubSpotClient,
    tenant_id: str,
    scan_id: str,
    scan_job_id: str,
    full_refresh: bool = False,
    lookback_seconds: int = settings.DEFAULT_LOOKBACK_SECONDS,
    stage_history: bool = True,
    progress: Progress | None = None,
    scan_started_at: datetime | None = None,
    batch_size: int = 50,
    known_stages: Callable[[Sequence[str]], dict[str, str | None]] | None = None,
) -> Iterable[Any]:
    """The deals source for one tenant's scan. ``client`` is bound to that tenant's portal."""
    progress = progress or _NoProgress()
    started = scan_started_at or datetime.now(UTC)
    properties = client.deal_property_names()
    history_of = (settings.STAGE_PROPERTY,) if stage_history else ()

    def emit(
        pages: Iterable[list[dict[str, Any]]], on_batch: Callable[[DealBatch], None] | None = None
    ) -> Iterator[Any]:
        """Yield the batches' tables, reporting each batch; stop at a batch boundary once
        cancelled. Batches are handed to dlt in chunks of about ``YIELD_ROWS`` deals (dlt's
        per-item cost for Arrow tables is fixed); what was reported is always yielded."""
        chunk = _Chunk()
        cancelled = False
        for page in pages:
            page_stamp = Stamp(tenant_id, scan_id, scan_job_id)  # one extraction time per page
            for start in range(0, len(page), batch_size):
                if progress.cancelled:  # noticed by another resource (dlt interleaves them)
                    cancelled = True
                    break
                batch = deal_batch(page[start:start + batch_size], page_stamp)
                # The last batch's report went out while this one was built: its answer says
                # whether this one may be taken (a cancelled scan stops at that boundary).
                if not progress.may_continue():
                    cancelled = True
                    break
                chunk.add(batch)
                if on_batch is not None:
                    on_batch(batch)
                if chunk.rows >= YIELD_ROWS:
                    yield from chunk.drain()
                progress.taken(batch.stored, len(batch.rejected))
            if cancelled:
                break
        if not cancelled and not progress.may_continue():  # the last batch's report
            cancelled = True
        yield from chunk.drain()
        if cancelled:
            raise _Cancelled

    # Tables and their columns are given per item (``_to_table``): one resource yields deals,
    # their stage history and rejected records.
    @dlt.resource(name="deals", write_disposition="append")
    def deals() -> Iterator[Any]:
        state = dlt.current.resource_state()
        cursor = _stored_cursor(state)
        incremental = not full_refresh and state.get("full_scan_completed") and cursor is not None
        state["last_scan_mode"] = "incremental" if incremental else "full"

        if incremental:
            pages = _with_history(
                client.search_modified(
                    properties,
                    since_ms=_lookback_ms(cursor, lookback_seconds),
                    until_ms=int(started.timestamp() * 1000),
                    on_total=progress.on_total,
                ),
                client,
                history_of,
                known_stages,
            )
        else:
            state["full_scan_completed"] = False
            progress.on_total(client.count_deals())
            pages = client.list_deals(properties, history_of=history_of)
        try:
            yield from emit(pages, lambda batch: _advance_cursor(state, batch.max_updated_us))
        except _Cancelled:
            return  # what was yielded is loaded; a full scan stays marked incomplete
        if not incremental:
            state["full_scan_completed"] = True

    @dlt.resource(name="archived_deals", table_name="deals", write_disposition="append")
    def archived_deals() -> Iterator[Any]:
        state = dlt.current.resource_state()
        through = None if full_refresh else _as_datetime(state.get("archived_through"))
        since_ms = None if through is None else _lookback_ms(through, lookback_seconds)
        try:
            yield from emit(client.list_deals(properties, archived=True,
                                              archived_since_ms=since_ms))
        except _Cancelled:
            return  # the cursor stays: the next scan lands this pass's deals again
        # Every deal archived before this scan started has been landed (this pass or earlier).
        state["archived_through"] = started.isoformat()

    @dlt.resource(name="pipelines", write_disposition="append",
                  columns={"id": {"data_type": "text", "nullable": False}, **_STAMP_COLUMNS})
    def pipelines() -> Iterator[list[dict[str, Any]]]:
        stamp = Stamp(tenant_id, scan_id, scan_job_id).row()
        rows = []
        for pipeline in client.pipelines():
            rows.append({
                "id": pipeline.get("id"),
                "label": pipeline.get("label"),
                "display_order": pipeline.get("displayOrder"),
                "archived": bool(pipeline.get("archived", False)),
                "stages": [
                    {
                        "id": stage.get("id"),
                        "label": stage.get("label"),
                        "display_order": stage.get("displayOrder"),
                        "archived": bool(stage.get("archived", False)),
                        "probability": (stage.get("metadata") or {}).get("probability"),
                        "is_closed": (stage.get("metadata") or {}).get("isClosed"),
                    }
                    for stage in pipeline.get("stages") or []
                ],
                **stamp,
            })
        yield rows

    return deals, archived_deals, pipelines


#: Deals handed to dlt at once: dlt computes and checks the table schema for every Arrow item.
YIELD_ROWS = 1_000


class _Chunk:
    """Batches waiting to be handed to dlt, as one item per table."""

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self.deals: list[pa.Table] = []
        self.history: list[pa.Table] = []
        self.rejected: list[dict[str, Any]] = []
        self.rows = 0

    def add(self, batch: DealBatch) -> None:
        if batch.stored:
            self.deals.append(batch.deals)
        if batch.stage_history is not None:
            self.history.append(batch.stage_history)
        self.rejected.extend(batch.rejected)
        self.rows += batch.stored + len(batch.rejected)

    def drain(self) -> Iterator[Any]:
        if self.deals:
            yield _to_table(pa.concat_tables(self.deals), "deals", DEAL_COLUMNS)
        if self.history:
            yield _to_table(pa.concat_tables(self.history), STAGE_HISTORY_TABLE,
                            STAGE_HISTORY_COLUMNS)
        if self.rejected:
            yield _to_table(self.rejected, "deals_rejected", REJECTED_COLUMNS)
        self._clear()


def _to_table(item: Any, table_name: str, columns: TTableSchemaColumns) -> Any:
    """``item`` bound for ``table_name`` with that table's columns (not the resource's)."""
    return dlt.mark.with_hints(
        item, dlt.mark.make_hints(table_name=table_name, columns=columns),
        create_table_variant=True,
    )


def _stored_cursor(state: dict[str, Any]) -> datetime | None:
    """The deals cursor a completed scan left: the latest ``updated_at`` stored. (Pipelines
    from before the cursor was kept by the source have it in dlt's incremental state.)"""
    value = state.get("cursor")
    if value is None:
        value = state.get("incremental", {}).get("updated_at", {}).get("last_value")
    return _as_datetime(value)


def _as_datetime(value: Any) -> datetime | None:
    """A time kept in resource state (a ``datetime``, or its ISO text once stored)."""
    if value is None:
        return None
    return value if isinstance(value, datetime) else parse_hubspot_datetime(value)


def _lookback_ms(cursor: datetime, lookback_seconds: int) -> int:
    """``cursor`` less the lookback, in epoch ms (never before the epoch)."""
    return int(max(cursor - timedelta(seconds=lookback_seconds), EPOCH).timestamp() * 1000)


def _advance_cursor(state: dict[str, Any], latest_us: int | None) -> None:
    """Move the cursor to ``latest_us`` (epoch µs) if that is later than the stored one (of
    either kind, see :func:`_stored_cursor`): it only goes forward, and is committed with the
    rows of the batch that moved it."""
    if latest_us is None:
        return
    latest = datetime.fromtimestamp(latest_us / 1_000_000, tz=UTC)
    current = _stored_cursor(state)
    if current is None or latest > current:
        state["cursor"] = latest.isoformat()


def _with_history(
    pages: Iterator[list[dict[str, Any]]],
    client: HubSpotClient,
    history_of: tuple[str, ...],
    known_stages: Callable[[Sequence[str]], dict[str, str | None]] | None,
) -> Iterator[list[dict[str, Any]]]:
    """Add ``propertiesWithHistory`` to searched deals (search cannot return history).

    History is fetched only for deals that are new to us or whose stage changed: for the rest
    the history already stored is complete. ``known_stages`` maps ids to stored stages.
    """
    for page in pages:
        if history_of and page:
            stored = known_stages([d["id"] for d in page]) if known_stages else {}
            wanted = [
                d["id"] for d in page
                if d["id"] not in stored
                or stored[d["id"]] != (d.get("properties") or {}).get(settings.STAGE_PROPERTY)
            ]
            history = client.read_deals(
                wanted, [settings.CURSOR_PROPERTY], history_of=history_of
            ) if wanted else []
            by_id = {h.get("id"): h.get("propertiesWithHistory") for h in history}
            for deal in page:
                if by_id.get(deal["id"]) is not None:
                    deal["propertiesWithHistory"] = by_id[deal["id"]]
        yield page
