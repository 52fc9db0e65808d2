"""dlt source for HubSpot CRM deals (API v3), multi-tenant and incremental.

Resources (all land in the dataset ``raw_hubspot``, every row stamped with ``_tenant_id``,
``_scan_id``, ``_scan_job_id`` and ``_extracted_at``):

- ``deals``: every deal with all of its properties kept whole as one JSON value; the stage history
  of ``dealstage`` as the table ``deals_stage_history``. Both are built as Arrow tables
  (``records.deal_batch``) and written by the source to csv job files (:class:`_Spool`), which
  dlt imports into its load package whole: no row passes through dlt's extract or normalize
  writers, and ``COPY`` loads the files as written. The first scan of a tenant (and
  ``full_refresh``) reads every deal from the list endpoint; later scans search on
  ``hs_lastmodifieddate`` from the cursor (the latest ``updated_at`` stored, at most the start
  of a full scan, kept in the resource's state and committed with the rows), re-reading a
  lookback window for HubSpot's search-index lag. Archived deals are listed each scan too
  (``archived=true``), so deletions reach the warehouse; an incremental scan lands only those
  archived since the last complete pass over that list, less the lookback (its own cursor,
  ``archived_through`` in the state of ``archived_deals``): the others are already stored, and
  cannot change while archived.
- ``deals_rejected``: records HubSpot sent that we could not store, kept whole with the reason.
- ``pipelines``: deal pipelines with their stages (child table ``pipelines__stages``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import dlt
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
from dlt.common.schema.typing import TTableSchemaColumns
from dlt.common.schema.utils import dlt_load_id_column

from . import settings
from .helpers import HubSpotClient, WalkAhead, prefetched
from .records import (
    EPOCH,
    ONE_US,
    DealBatch,
    Stamp,
    deal_batch,
    epoch_ms,
    epoch_us,
    parse_hubspot_datetime,
)

SOURCE_NAME = "hubspot"

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
#: Its ``_dlt_id`` has no ``unique`` hint (dlt's child tables have one, and PostgreSQL a unique
#: constraint for it): the ids are the loader's own (:func:`records.row_ids`), nothing reads the
#: history by them, and checking every entry against the key cost a full scan of 4 x 50,000
#: deals 0.3-2.6 s of its 14-19 s (PostgreSQL 0.5-2.9 CPU s; seven pairs of runs with and
#: without it, README "Performance"). A job loaded twice after a kill is told apart by
#: ``scan._settle_committed_jobs``, as for the deals, which never had the key; a database created
#: with the key loses it at its next scan (``scan.drop_legacy_history_key``).
STAGE_HISTORY_TABLE = "deals_stage_history"
STAGE_HISTORY_COLUMNS: TTableSchemaColumns = {
    "value": {"data_type": "text"},
    "changed_at": {"data_type": "timestamp"},
    "source_type": {"data_type": "text"},
    "_dlt_root_id": {"data_type": "text", "nullable": False},
    "_dlt_parent_id": {"data_type": "text", "nullable": False},
    "_dlt_list_idx": {"data_type": "bigint", "nullable": False},
    "_dlt_id": {"data_type": "text", "nullable": False, "row_key": True},
}

REJECTED_TABLE = "deals_rejected"
REJECTED_COLUMNS: TTableSchemaColumns = {
    "deal_id": {"data_type": "text"},
    "reason": {"data_type": "text", "nullable": False},
    "payload": {"data_type": "json"},
    **_STAMP_COLUMNS,
}


#: The load id column dlt's normaliser adds to every row (the spool writes it itself).
LOAD_ID_FIELD = pa.field("_dlt_load_id", pa.string(), nullable=False)
_LOAD_ID_COLUMN = dlt_load_id_column()

#: The columns of the tables the spool writes, as their csv files have them.
_SPOOLED_COLUMNS: dict[str, TTableSchemaColumns] = {
    "deals": {**DEAL_COLUMNS, "_dlt_id": {"data_type": "text", "nullable": False},
              "_dlt_load_id": _LOAD_ID_COLUMN},
    STAGE_HISTORY_TABLE: {**STAGE_HISTORY_COLUMNS, "_dlt_load_id": _LOAD_ID_COLUMN},
}

#: Rows of one table the spool gathers before it converts and writes them (:class:`_Spool`):
#: a batch of 50 deals (and their stage history) at a time, with 1.5 MB of deals at most.
SPOOL_ROWS = 1000

#: dlt's csv format for PostgreSQL (``CsvFormatConfiguration``'s defaults: comma, header,
#: quoting where needed), which its ``COPY`` job reads.
_CSV_OPTIONS = pa_csv.WriteOptions(include_header=True, delimiter=",", quoting_style="needed")


def timestamps_as_text(table: pa.Table) -> pa.Table:
    """``table`` with each UTC timestamp column as the text pyarrow's csv writer gives it
    (``2024-05-15 10:06:56.530000Z``; a null stays null), for :class:`_Spool` to write.

    The writer formats a zoned timestamp through the time zone database, about 1.5 µs a value
    on two cores here, against 0.1-0.2 µs for Arrow's cast of the same instant without its
    zone to text with the ``Z`` appended; a deal has four such values and each history entry
    one, which made the csv writing three to five times slower than it needs to be. The file
    then has the text quoted (a string column), which ``COPY`` reads as the same value."""
    import pyarrow.compute as pc

    for i, column in enumerate(table.schema):
        if pa.types.is_timestamp(column.type) and column.type.tz == "UTC":
            instants = table.column(i).cast(pa.timestamp(column.type.unit))
            text = pc.binary_join_element_wise(instants.cast(pa.string()), "Z", "")
            table = table.set_column(i, pa.field(column.name, pa.string(), column.nullable),
                                     text)
    return table


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
    #: The archived walk an incremental scan starts with its search: (since_ms, the walk).
    early: dict[str, tuple[int, WalkAhead]] = {}

    def archived_since_ms(state: dict[str, Any]) -> int | None:
        """Epoch ms from which the archived walk keeps deals (None: every archived deal)."""
        through = None if full_refresh else _as_datetime(state.get("archived_through"))
        return None if through is None else _lookback_ms(through, lookback_seconds)

    def archived_pages(since_ms: int | None) -> Iterator[list[dict[str, Any]]]:
        return client.list_deals(properties, archived=True, archived_since_ms=since_ms)

    def emit(
        pages: Iterable[list[dict[str, Any]]], on_batch: Callable[[DealBatch], None] | None = None
    ) -> Iterator[Any]:
        """Write the batches to a spool, reporting each batch; stop at a batch boundary once
        cancelled. The spool's files are handed to dlt when the pages end or the scan was
        cancelled: what was reported is always yielded. On an error nothing is: the extract
        step fails, and dlt commits nothing of a failed extract."""
        spool = _Spool()
        cancelled = False
        try:
            for page in pages:
                page_stamp = Stamp(tenant_id, scan_id, scan_job_id)  # one extraction time a page
                for start in range(0, len(page), batch_size):
                    if progress.cancelled:  # noticed by another resource (dlt interleaves them)
                        cancelled = True
                        break
                    batch = deal_batch(page[start:start + batch_size], page_stamp)
                    # The last batch's report went out while this one was built: its answer
                    # says whether this one may be taken (a cancelled scan stops there).
                    if not progress.may_continue():
                        cancelled = True
                        break
                    spool.add(batch)
                    if on_batch is not None:
                        on_batch(batch)
                    if len(spool.rejected) >= YIELD_ROWS:
                        yield from spool.drain_rejected()
                    progress.taken(batch.stored, len(batch.rejected))
                if cancelled:
                    break
            if not cancelled and not progress.may_continue():  # the last batch's report
                cancelled = True
            yield from spool.drain()
        finally:
            spool.close()
        if cancelled:
            raise _Cancelled

    # Tables and their columns are given per item (``_table_of``, ``_columns_of``): one resource
    # yields deals, their stage history and rejected records.
    @dlt.resource(name="deals", table_name=_table_of, columns=_columns_of,
                  write_disposition="append")
    def deals() -> Iterator[Any]:
        state = dlt.current.resource_state()
        cursor = _stored_cursor(state)
        incremental = not full_refresh and state.get("full_scan_completed") and cursor is not None
        state["last_scan_mode"] = "incremental" if incremental else "full"

        if incremental:
            # The archived walk reads ids only and depends on nothing here: it goes on beside
            # the search (its kept pages wait for the archived_deals resource, a few at most).
            since_ms = archived_since_ms(dlt.current.resource_state("archived_deals"))
            if since_ms is not None:
                early["archived"] = (since_ms, WalkAhead(
                    archived_pages(since_ms), ARCHIVED_PAGES_AHEAD, name="hubspot-archived"))
            # The next searched page is fetched while this one's stored stages are looked up
            # and its history read: the walk's round trips no longer wait on each other's.
            pages = _with_history(
                prefetched(client.search_modified(
                    properties,
                    since_ms=_lookback_ms(cursor, lookback_seconds),
                    until_ms=epoch_ms(started),
                    on_total=progress.on_total,
                )),
                client,
                history_of,
                known_stages,
            )
        else:
            state["full_scan_completed"] = False
            progress.on_total(client.count_deals())
            pages = client.list_deals(properties, history_of=history_of)
        # A full scan's cursor goes no further than the scan's start: a deal changed after its
        # page was read has an older hs_lastmodifieddate than deals changed later and read
        # later, so the next scan searches from the start (less the lookback), not from the
        # newest deal the walk met. (An incremental scan's search ends at its start anyway.)
        cap_us = None if incremental else epoch_us(started)
        try:
            yield from emit(pages, lambda batch: _advance_cursor(
                state, _at_most(batch.max_updated_us, cap_us)))
        except _Cancelled:
            return  # what was yielded is loaded; a full scan stays marked incomplete
        except BaseException:
            for _, walk in early.values():  # the scan fails: no one will take its pages
                walk.stop()
            raise
        if not incremental:
            state["full_scan_completed"] = True

    @dlt.resource(name="archived_deals", table_name=_table_of, columns=_columns_of,
                  write_disposition="append")
    def archived_deals() -> Iterator[Any]:
        state = dlt.current.resource_state()
        since_ms = archived_since_ms(state)
        started_early = early.pop("archived", None)
        if started_early is not None and started_early[0] == since_ms:
            pages = started_early[1].items()
        else:
            if started_early is not None:
                started_early[1].stop()
            pages = archived_pages(since_ms)
        try:
            yield from emit(pages)
        except _Cancelled:
            return  # the cursor stays: the next scan lands this pass's deals again
        # Every deal archived before this scan started has been landed (this pass or earlier).
        state["archived_through"] = started.isoformat()

    @dlt.resource(name="pipelines", write_disposition="append",
                  columns={"id": {"data_type": "text", "nullable": False}, **_STAMP_COLUMNS})
    def pipelines() -> Iterator[list[dict[str, Any]]]:
        # A snapshot lands when it differs from the last one landed (the digest of its rows, in
        # the resource's state, committed with them), and on every full scan: dbt reads the
        # latest finished scan that landed any. A worker scanning every 5 minutes stored the
        # same few rows 288 times a day per tenant, two of a small scan's five load jobs.
        state = dlt.current.resource_state()
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
            })
        digest = hashlib.sha256(orjson.dumps(rows, option=orjson.OPT_SORT_KEYS)).hexdigest()
        if not full_refresh and state.get("landed_digest") == digest:
            return
        stamp = Stamp(tenant_id, scan_id, scan_job_id).row()
        yield [{**row, **stamp} for row in rows]
        state["landed_digest"] = digest

    return deals, archived_deals, pipelines


#: Pages of kept archived deals (each up to 100, every property) an early archived walk holds
#: before the archived_deals resource takes them.
ARCHIVED_PAGES_AHEAD = 4


#: Rejected records handed to dlt at once (as rows: they are few, and dlt normalises them).
YIELD_ROWS = 1_000

#: Where the source writes its csv job files: a folder of the pipeline's working folder (so that
#: dlt's import is a hard link, not a copy). A scan removes what a killed one left there.
SPOOL_DIR = "spool"


def spool_dir(working_dir: str) -> str:
    """The spool folder of a pipeline whose working folder is ``working_dir``."""
    return os.path.join(working_dir, SPOOL_DIR)


@dataclass(frozen=True)
class _SpooledFile:
    """The item that goes with a csv file the source wrote: the table it is for, and its columns
    (given to dlt as the resource's dynamic hints, see :func:`_table_of`)."""

    table_name: str
    columns: TTableSchemaColumns


def _table_of(item: Any) -> str:
    """The table an item of the deals resources is for (a spooled file's, else rejected rows)."""
    return item.table_name if isinstance(item, _SpooledFile) else REJECTED_TABLE


def _columns_of(item: Any) -> TTableSchemaColumns:
    return item.columns if isinstance(item, _SpooledFile) else REJECTED_COLUMNS


@dataclass
class _OpenFile:
    path: str
    handle: Any
    writer: pa_csv.CSVWriter
    rows: int = 0

    def close(self) -> None:
        self.writer.close()
        self.handle.close()


class _Spool:
    """The batches one resource takes, written to csv job files as they come, one per table.

    Yielded to dlt as Arrow tables, every row would be written to parquet in the extract step,
    read back in the normalize step and written again as csv for PostgreSQL's ``COPY`` (with the
    ``_dlt_load_id`` column added): a sixth of a full scan's loader CPU. Here each batch goes to
    csv once, as dlt's csv writer writes it (pyarrow's writer; a header line, quoting where
    needed), with the load id of the package being extracted; :meth:`drain` closes the files
    and yields them for dlt to import into the package (a hard link: dlt's normalize step moves
    them on as they are). Rejected records are yielded as rows (dlt normalises those itself).
    :meth:`close` removes what was not imported.

    A table's batches are gathered until they hold :data:`SPOOL_ROWS` rows and written together
    (and by :meth:`drain`): converting and writing a batch costs a fixed 0.1-0.3 ms besides its
    rows, so 50 deals at a time took three times as long as 1,000.
    """

    def __init__(self) -> None:
        self.directory: str | None = None
        self._load_id: pa.Scalar | None = None
        self._files: dict[str, _OpenFile] = {}
        self._gathered: dict[str, list[pa.Table]] = {}
        self.rejected: list[dict[str, Any]] = []

    def add(self, batch: DealBatch) -> None:
        if batch.stored:
            self._gather("deals", batch.deals)
        if batch.stage_history is not None:
            self._gather(STAGE_HISTORY_TABLE, batch.stage_history)
        self.rejected.extend(batch.rejected)

    def _gather(self, table_name: str, table: pa.Table) -> None:
        tables = self._gathered.setdefault(table_name, [])
        tables.append(table)
        if sum(t.num_rows for t in tables) >= SPOOL_ROWS:
            self._flush(table_name)

    def _flush(self, table_name: str) -> None:
        tables = self._gathered.pop(table_name, None)
        if tables:
            self._write(table_name, pa.concat_tables(tables).combine_chunks())

    def _write(self, table_name: str, table: pa.Table) -> None:
        if self._load_id is None:
            self._load_id = pa.scalar(dlt.current.load_package_state()["load_id"], pa.string())
            parent = spool_dir(dlt.current.pipeline().working_dir)
            os.makedirs(parent, exist_ok=True)
            self.directory = tempfile.mkdtemp(dir=parent)
        table = timestamps_as_text(table).append_column(
            LOAD_ID_FIELD, pa.repeat(self._load_id, table.num_rows))
        spooled = self._files.get(table_name)
        if spooled is None:
            path = os.path.join(self.directory, f"{table_name}.csv")
            handle = open(path, "wb")  # noqa: SIM115 - closed by drain() or close()
            spooled = self._files[table_name] = _OpenFile(
                path, handle, pa_csv.CSVWriter(handle, table.schema, write_options=_CSV_OPTIONS))
        spooled.writer.write_table(table)
        spooled.rows += table.num_rows

    def drain_rejected(self) -> Iterator[Any]:
        if self.rejected:
            rows, self.rejected = self.rejected, []
            yield rows

    def drain(self) -> Iterator[Any]:
        """Everything added so far: rejected rows, then each table's file, closed, to import."""
        yield from self.drain_rejected()
        for table_name in list(self._gathered):
            self._flush(table_name)
        while self._files:
            table_name, spooled = self._files.popitem()
            spooled.close()
            yield dlt.mark.with_file_import(
                spooled.path, "csv", spooled.rows,
                _SpooledFile(table_name, _SPOOLED_COLUMNS[table_name]))

    def close(self) -> None:
        self._gathered = {}
        for spooled in self._files.values():
            spooled.close()
        self._files = {}
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


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
    return epoch_ms(max(cursor - timedelta(seconds=lookback_seconds), EPOCH))


def _at_most(value: int | None, cap: int | None) -> int | None:
    return value if value is None or cap is None else min(value, cap)


def _advance_cursor(state: dict[str, Any], latest_us: int | None) -> None:
    """Move the cursor to ``latest_us`` (epoch µs) if that is later than the stored one (of
    either kind, see :func:`_stored_cursor`): it only goes forward, and is committed with the
    rows of the batch that moved it."""
    if latest_us is None:
        return
    latest = EPOCH + latest_us * ONE_US
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
