"""The dlt settings a scan sets (``scan.DLT_PERFORMANCE_DEFAULTS``) reach the part of dlt they
are meant for: a setting under a key dlt does not read would be silently ignored."""

from __future__ import annotations

import dlt
import pytest
from dlt.extract.pipe_iterator import PipeIterator

from loader.scan import DLT_PERFORMANCE_DEFAULTS


@pytest.fixture()
def scan_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in DLT_PERFORMANCE_DEFAULTS.items():
        monkeypatch.setenv(key, value)


@pytest.mark.usefixtures("scan_settings")
def test_the_extract_loop_polls_every_millisecond() -> None:
    # How dlt's extract step makes its iterator over a source's resources.
    iterator = PipeIterator.from_pipes([dlt.resource([1, 2], name="items")._pipe])
    assert iterator._futures_pool.poll_interval == 0.001
    assert [item.item for item in iterator] == [1, 2]


def test_without_the_settings_dlt_polls_every_ten_milliseconds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for key in DLT_PERFORMANCE_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    iterator = PipeIterator.from_pipes([dlt.resource([1], name="items")._pipe])
    assert iterator._futures_pool.poll_interval == 0.01
