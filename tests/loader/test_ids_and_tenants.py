"""Tenant/scan id validation and the tenants file."""

from __future__ import annotations

from pathlib import Path

import pytest

from loader.errors import UsageError
from loader.ids import validate_scan_id, validate_tenant_id
from loader.tenants import load_tenants


@pytest.mark.parametrize("bad", [
    "org'; drop table deals; --", "", " acme", "acme tenant", "../etc", "a" * 129, "ümlaut",
    "-leading-dash",
])
def test_bad_tenant_ids_are_refused(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        validate_tenant_id(bad)
    assert "\n" not in str(info.value) and "invalid tenant id" in str(info.value)


@pytest.mark.parametrize("good", ["acme", "org-12345", "tenant_1.eu", "A1"])
def test_good_tenant_ids_pass(good: str) -> None:
    assert validate_tenant_id(good) == good


def test_bad_scan_ids_are_refused() -> None:
    with pytest.raises(UsageError):
        validate_scan_id("x'; delete from loader.scan_jobs; --")
    assert validate_scan_id("hubspot-deals-acme-20261125T103000-ab12cd")


def test_tenants_file_with_a_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text('[[tenants]]\nid = "acme"\ntoken = "pat-na1-secret"\n')
    with pytest.raises(UsageError) as info:
        load_tenants(path)
    assert "holds a token" in str(info.value)
    assert "pat-na1-secret" not in str(info.value)


def test_tenants_file_is_read_and_validated(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text('[[tenants]]\nid = "acme"\ntoken_env = "TOK_A"\n'
                    '[[tenants]]\nid = "globex"\ntoken_secret = "sources.hubspot.globex.token"\n')
    tenants = load_tenants(path)
    assert tenants["acme"].token_source == "env:TOK_A"
    assert tenants["globex"].token_source == "dlt-secret:sources.hubspot.globex.token"
    path.write_text('[[tenants]]\nid = "bad id"\ntoken_env = "X"\n')
    with pytest.raises(UsageError):
        load_tenants(path)
