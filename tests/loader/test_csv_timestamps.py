"""``timestamps_as_text``: the spool's UTC timestamps written as text land in PostgreSQL as the
same instants as pyarrow's csv writer's own formatting of them (which is 3-5x slower)."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.csv as pa_csv

from loader.hubspot import _CSV_OPTIONS, timestamps_as_text
from loader.hubspot.records import TIMESTAMP

#: Edge instants in µs: null, the epoch and a µs either side, a day before it, year 1 and the
#: last µs of year 9999, 1900, and whole seconds (the text keeps all six fractional digits).
EDGES = [None, 0, -1, 1, -86_400_000_000, 1_000_000, 999_999, -62_135_596_800_000_000,
         253_402_300_799_999_999, -2_208_988_800_000_000]


def _table() -> pa.Table:
    rng = random.Random(7)
    micros = EDGES + [rng.choice([None, rng.randint(-62_135_596_800_000_000,
                                                      253_402_300_799_999_999)])
                      for _ in range(2000)]
    return pa.table({
        "id": pa.array([str(i) for i in range(len(micros))]),
        "at": pa.array(micros, TIMESTAMP),
        "naive": pa.array(micros, pa.timestamp("us")),  # not UTC-zoned: left to the writer
    })


def _csv(table: pa.Table) -> bytes:
    out = io.BytesIO()
    writer = pa_csv.CSVWriter(out, table.schema, write_options=_CSV_OPTIONS)
    writer.write_table(table)
    writer.close()
    return out.getvalue()


def test_only_utc_timestamps_become_text_and_read_back_as_the_writers_own() -> None:
    table = _table()
    text = timestamps_as_text(table)
    assert text.schema.field("at").type == pa.string()
    assert text.schema.field("naive").type == pa.timestamp("us")
    assert text.column("at").null_count == table.column("at").null_count > 0
    assert text.column("at")[0].as_py() is None
    assert text.column("at")[1].as_py() == "1970-01-01 00:00:00.000000Z"
    assert text.column("at")[7].as_py() == "0001-01-01 00:00:00.000000Z"
    assert text.column("at")[8].as_py() == "9999-12-31 23:59:59.999999Z"
    # Field by field what pyarrow's writer writes for the timestamps (quoted now: a string).
    assert list(csv.reader(io.StringIO(_csv(text).decode()))) == list(
        csv.reader(io.StringIO(_csv(table).decode())))


def test_copy_lands_the_text_as_the_same_instants(db_conn) -> None:
    table = _table().select(["id", "at"])
    with db_conn.cursor() as cur:
        cur.execute("create temporary table spool_ts (id text primary key, at timestamptz)")
        cur.execute("set time zone 'America/St_Johns'")  # what lands must not depend on it
        cur.copy_expert("copy spool_ts from stdin with (format csv, header true)",
                        io.BytesIO(_csv(timestamps_as_text(table))))
        cur.execute("set time zone 'UTC'")  # year 1 in UTC is year 0 west of it: no datetime
        cur.execute("select id, at from spool_ts")
        landed = dict(cur.fetchall())
    expected = {row["id"]: row["at"] for row in table.to_pylist()}
    assert landed == expected
    assert landed["7"] == datetime(1, 1, 1, tzinfo=UTC)
    assert sum(v is None for v in landed.values()) > 1
