"""Millisecond timestamps <-> the ISO-8601 strings HubSpot sends."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

_gmtime = time.gmtime
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_DAYS: dict[int, str] = {}


def now_ms() -> int:
    """Current wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def _day_string(day: int) -> str:
    s = _DAYS.get(day)
    if s is None:
        t = _gmtime(day * 86_400)
        s = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        if len(_DAYS) < 200_000:
            _DAYS[day] = s
    return s


def iso_ms(ms: int) -> str:
    """Format epoch milliseconds as HubSpot does: ``2024-03-05T14:22:10.123Z``."""
    day, rem = divmod(ms, 86_400_000)
    sec, milli = divmod(rem, 1000)
    hour, sec = divmod(sec, 3600)
    minute, sec = divmod(sec, 60)
    return f"{_day_string(day)}T{hour:02d}:{minute:02d}:{sec:02d}.{milli:03d}Z"


def iso_date(ms: int) -> str:
    """Format epoch milliseconds as a date-only string: ``2024-05-01``."""
    return _day_string(ms // 86_400_000)


def parse_ms(value: str | None) -> int | None:
    """Parse epoch milliseconds, an ISO datetime or a date-only string; None if not a time.

    HubSpot's search takes datetime filter values as epoch milliseconds, and property values
    are ISO strings; both must compare on one numeric scale.
    """
    if value is None:
        return None
    s = value.strip()
    if not s:
        return None
    if s.isdigit() or (s[0] == "-" and s[1:].isdigit()):
        return int(s)
    try:
        if len(s) == 10:
            dt = datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=UTC)
        else:
            dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
    except ValueError:
        return None
    return (dt - _EPOCH) // _ONE_MS


def utc_ms(year: int, month: int, day: int) -> int:
    """Epoch milliseconds of midnight UTC on the given date."""
    return (datetime(year, month, day, tzinfo=UTC) - _EPOCH) // _ONE_MS
