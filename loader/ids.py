"""Validation of tenant and scan identifiers, before anything touches the database."""

from __future__ import annotations

import re

from .errors import UsageError

_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SCAN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$")


def validate_tenant_id(value: str) -> str:
    """Return ``value`` if it is a valid tenant id (letters, digits, ``_.-``; ≤128 chars)."""
    if not isinstance(value, str) or not _TENANT_RE.match(value):
        raise UsageError(
            f"invalid tenant id {value!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value


def validate_scan_id(value: str) -> str:
    """Return ``value`` if it is a valid scan id (letters, digits, ``_.:-``; ≤255 chars)."""
    if not isinstance(value, str) or not _SCAN_RE.match(value):
        raise UsageError(
            f"invalid scan id {value!r}: use letters, digits, '_', '.', ':' or '-' (max 255)"
        )
    return value
