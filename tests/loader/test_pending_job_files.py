"""Reading the first row's ``_dlt_id`` of a job file an interrupted load left started (and its
indexed columns that narrow the lookup): how the loader tells whether the killed load had
committed it (``loader.scan._settle_committed_jobs``). The files are written by dlt's own
writers, as its normalize step writes them."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dlt.common.data_writers.writers import CsvWriter, InsertValuesWriter
from dlt.destinations import postgres

from loader.scan import _first_csv_keys, _first_dlt_id_insert_values

#: Strings dlt has to escape, before the ``_dlt_id`` in the row.
AWKWARD = ["it's", "back\\slash", "two\nlines\r\n", "a, b", "(paren)", "E'x'", "", "'')"]

COLUMNS = {name: {"name": name, "data_type": data_type} for name, data_type in [
    ("version", "bigint"), ("text", "text"), ("missing", "text"), ("at", "timestamp"),
    ("doc", "json"), ("flag", "bool"), ("_dlt_load_id", "text"), ("_dlt_id", "text")]}


def _rows(count: int) -> list[dict]:
    return [{"version": i, "text": AWKWARD[i % len(AWKWARD)], "missing": None,
             "at": datetime(2026, 12, 4, 19, 43, 18, 556000, tzinfo=UTC),
             "doc": {"quote": "'", "list": [1, "(,)"]}, "flag": i % 2 == 0,
             "_dlt_load_id": "1796413396.8406355", "_dlt_id": f"id-{i}-hYQjY1N133"}
            for i in range(count)]


def _write(path: Path, writer_type: type, rows: list[dict], compressed: bool = False,
           columns: dict | None = None) -> Path:
    opener = gzip.open if compressed else open
    binary = writer_type.writer_spec().is_binary_format
    with (opener(path, "wb") if binary else
          opener(path, "wt", encoding="utf-8", newline="")) as handle:
        writer = writer_type(handle, caps=postgres().capabilities())
        writer.write_header(columns or COLUMNS)
        writer.write_data(rows)
        writer.write_footer()
    return path


@pytest.mark.parametrize("text", AWKWARD)
@pytest.mark.parametrize("compressed", [False, True])
def test_insert_values_first_row_id_after_any_escaped_string(
        tmp_path: Path, text: str, compressed: bool) -> None:
    rows = [{**row, "text": text} for row in _rows(3)]
    path = _write(tmp_path / "state.0.insert_values", InsertValuesWriter, rows, compressed)
    assert _first_dlt_id_insert_values(str(path), compressed) == "id-0-hYQjY1N133"


def test_csv_and_insert_values_agree_on_the_first_row(tmp_path: Path) -> None:
    rows = _rows(len(AWKWARD))
    csv_path = _write(tmp_path / "t.0.csv", CsvWriter, rows)
    values_path = _write(tmp_path / "t.0.insert_values", InsertValuesWriter, rows)
    assert _first_csv_keys(str(csv_path), False) == {"_dlt_id": "id-0-hYQjY1N133"}
    assert _first_dlt_id_insert_values(str(values_path), False) == "id-0-hYQjY1N133"


def test_a_file_without_rows_or_without_the_column_tells_nothing(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.0.insert_values", InsertValuesWriter, [])
    assert _first_dlt_id_insert_values(str(empty), False) is None
    no_id = tmp_path / "no_id.0.insert_values"
    no_id.write_text('INSERT INTO {}("version")\nVALUES\n(1);', encoding="utf-8")
    assert _first_dlt_id_insert_values(str(no_id), False) is None
    garbled = tmp_path / "garbled.0.insert_values"
    garbled.write_text("INSERT INTO {}(\"_dlt_id\")\nVALUES\n(E'unterminated);",
                       encoding="utf-8")
    assert _first_dlt_id_insert_values(str(garbled), False) is None


@pytest.mark.parametrize("compressed", [False, True])
def test_a_csv_first_row_names_the_indexed_columns_it_has_values_for(
        tmp_path: Path, compressed: bool) -> None:
    columns = {**COLUMNS, **{name: {"name": name, "data_type": "text"}
                             for name in ("_dlt_parent_id", "_scan_job_id")}}
    rows = [{**row, "_dlt_parent_id": f"parent-{i}", "_scan_job_id": None}
            for i, row in enumerate(_rows(2))]
    path = _write(tmp_path / "deals_stage_history.0.csv", CsvWriter, rows, compressed, columns)
    # The parent row's id (indexed) narrows the lookup; a null scan job id is left out.
    assert _first_csv_keys(str(path), compressed) == {
        "_dlt_parent_id": "parent-0", "_dlt_id": "id-0-hYQjY1N133"}
    assert _first_csv_keys(str(_write(tmp_path / "empty.0.csv", CsvWriter, [])), False) == {}
