"""dlt source for HubSpot CRM deals (API v3), multi-tenant and incremental.

Resources (all land in the dataset ``raw_hubspot``, every row stamped with ``_tenant_id``,
``_scan_id``, ``_scan_job_id`` and ``_extracted_at``):

- ``deals``: every deal with all of its properties kept whole as one JSON value; the stage history
  of ``dealstage`` as the child table ``deals__stage_history``. The first scan of a tenant (and
  ``full_refresh``) reads every deal from the list endpoint; later scans search on
  ``hs_lastmodifieddate`` from the cursor kept in ``dlt.sources.incremental``, re-reading a
  lookback window for HubSpot's search-index lag. Archived deals are read each scan too
  (``archived=true``), so deletions reach the warehouse.
- ``deals_rejected``: records HubSpot sent that we could not store, kept whole with the reason.
- ``pipelines``: deal pipelines with their stages (child table ``pipelines__stages``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import dlt
from dlt.common.schema.typing import TTableSchemaColumns

from . import settings
from .helpers import HubSpotClient
from .records import deal_row, parse_hubspot_datetime, rejected_row

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

REJECTED_COLUMNS: TTableSchemaColumns = {
    "deal_id": {"data_type": "text"},
    "reason": {"data_type": "text", "nullable": False},
    "payload": {"data_type": "json"},
    **_STAMP_COLUMNS,
}


class Progress(Protocol):
    """What the source reports to the scan job as it runs."""

    def on_total(self, total: int) -> None:
        """HubSpot told how many deals to expect."""

    def on_batch(self, processed: int, failed: int) -> bool:
        """``processed``/``failed`` more records; return False to stop (the scan was cancelled)."""

    @property
    def cancelled(self) -> bool:
        """True once the scan was cancelled: no resource may yield another batch."""


class _Cancelled(Exception):
    """Raised inside a resource when the scan job was cancelled."""


class _NoProgress:
    cancelled = False

    def on_total(self, total: int) -> None:
        pass

    def on_batch(self, processed: int, failed: int) -> bool:
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
    stamp = {"tenant_id": tenant_id, "scan_id": scan_id, "scan_job_id": scan_job_id}

    def batches_of(page: list[dict[str, Any]]) -> Iterator[tuple[list[Any], int, int]]:
        """Split a page into batches of ``batch_size``: (rows, stored, rejected)."""
        extracted_at = datetime.now(UTC)
        for start in range(0, len(page), batch_size):
            rows: list[Any] = []
            failed = 0
            for deal in page[start:start + batch_size]:
                row, reason = deal_row(deal, tenant_id, scan_id, scan_job_id, extracted_at)
                if row is not None:
                    rows.append(row)
                else:
                    failed += 1
                    rows.append(
                        dlt.mark.with_table_name(
                            rejected_row(deal, reason or "unknown", tenant_id, scan_id,
                                         scan_job_id, extracted_at),
                            "deals_rejected",
                        )
                    )
            yield rows, len(rows) - failed, failed

    def emit(pages: Iterable[list[dict[str, Any]]]) -> Iterator[list[Any]]:
        """Yield batches, reporting each; stop at a batch boundary once cancelled."""
        for page in pages:
            for rows, stored, failed in batches_of(page):
                if progress.cancelled:  # noticed by another resource (dlt interleaves them)
                    raise _Cancelled
                yield rows
                if not progress.on_batch(stored, failed):
                    raise _Cancelled

    @dlt.resource(
        name="deals",
        write_disposition="append",
        columns=DEAL_COLUMNS,
    )
    def deals(
        updated_at: dlt.sources.incremental[datetime] = dlt.sources.incremental(
            "updated_at",
            lag=lookback_seconds,
            on_cursor_value_missing="include",
        ),
    ) -> Iterator[list[Any]]:
        state = dlt.current.resource_state()
        since = updated_at.last_value
        incremental = not full_refresh and state.get("full_scan_completed") and since is not None
        state["last_scan_mode"] = "incremental" if incremental else "full"
        if incremental:
            since_dt = parse_hubspot_datetime(since) if not isinstance(since, datetime) else since
            pages = _with_history(
                client.search_modified(
                    properties,
                    since_ms=int((since_dt or EPOCH).timestamp() * 1000),
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
            yield from emit(pages)
        except _Cancelled:
            return  # what was yielded is loaded; a full scan stays marked incomplete
        if not incremental:
            state["full_scan_completed"] = True

    @dlt.resource(name="archived_deals", table_name="deals", write_disposition="append",
                  columns=DEAL_COLUMNS)
    def archived_deals() -> Iterator[list[Any]]:
        try:
            yield from emit(client.list_deals(properties, archived=True))
        except _Cancelled:
            return

    @dlt.resource(name="pipelines", write_disposition="append",
                  columns={"id": {"data_type": "text", "nullable": False}, **_STAMP_COLUMNS})
    def pipelines() -> Iterator[list[dict[str, Any]]]:
        extracted_at = datetime.now(UTC)
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
                "_tenant_id": stamp["tenant_id"],
                "_scan_id": stamp["scan_id"],
                "_scan_job_id": stamp["scan_job_id"],
                "_extracted_at": extracted_at,
            })
        yield rows

    return deals, archived_deals, pipelines


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
