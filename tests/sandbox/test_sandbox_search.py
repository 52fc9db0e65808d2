"""The CRM search endpoint: operators, groups, sorting, paging, limits and the 10k cap.

Expected results are computed independently from the portal's full deal data."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from loader.sandbox import SandboxServer
from tests.sandbox.sandbox_helpers import session_for

SEARCH = "/crm/v3/objects/deals/search"


def _ms(value: str | None) -> int | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def _num(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def search_all(session: requests.Session, base: str, body: dict[str, Any]
               ) -> tuple[list[dict[str, Any]], int]:
    """All pages of a search: (results, total)."""
    out: list[dict[str, Any]] = []
    after = None
    while True:
        b = {**body, "limit": body.get("limit", 200)}
        if after:
            b["after"] = after
        r = session.post(base + SEARCH, json=b)
        assert r.status_code == 200, r.text
        page = r.json()
        out.extend(page["results"])
        nxt = page.get("paging", {}).get("next")
        if not nxt:
            return out, page["total"]
        after = nxt["after"]


@pytest.fixture
def live_deals(server: SandboxServer) -> list[dict[str, Any]]:
    """Every live acme deal with all properties, straight from the portal."""
    p = server.portal("acme")
    return [p.deal(i) for i in p.deal_ids()]


def _ids(deals: list[dict[str, Any]], pred: Callable[[dict[str, str | None]], bool]
         ) -> list[str]:
    return [d["id"] for d in deals if pred(d["properties"])]


def _one(name: str, op: str, **kw: Any) -> dict[str, Any]:
    return {"filterGroups": [{"filters": [{"propertyName": name, "operator": op, **kw}]}]}


CUT_MS = 1_672_531_200_000  # 2023-01-01T00:00:00Z
HIGH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z

OPERATOR_CASES: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ("EQ", _one("dealstage", "EQ", value="closedwon"), lambda p: p["dealstage"] == "closedwon"),
    ("EQ-numeric-stage", _one("dealstage", "EQ", value="93475815"),
     lambda p: p["dealstage"] == "93475815"),
    ("NEQ", _one("pipeline", "NEQ", value="default"), lambda p: p["pipeline"] != "default"),
    ("LT", _one("amount", "LT", value="10000"),
     lambda p: _num(p["amount"]) is not None and _num(p["amount"]) < 10000),
    ("LTE", _one("amount", "LTE", value="5000"),
     lambda p: _num(p["amount"]) is not None and _num(p["amount"]) <= 5000),
    ("GT", _one("hs_lastmodifieddate", "GT", value=str(CUT_MS)),
     lambda p: _ms(p["hs_lastmodifieddate"]) > CUT_MS),
    ("GTE", _one("amount", "GTE", value="250000"),
     lambda p: _num(p["amount"]) is not None and _num(p["amount"]) >= 250000),
    ("BETWEEN", _one("createdate", "BETWEEN", value=str(CUT_MS), highValue=str(HIGH_MS)),
     lambda p: CUT_MS <= _ms(p["createdate"]) <= HIGH_MS),
    ("BETWEEN-closedate", _one("closedate", "BETWEEN", value=str(CUT_MS),
                               highValue=str(HIGH_MS)),
     lambda p: p["closedate"] is not None and CUT_MS <= _ms(p["closedate"]) <= HIGH_MS),
    ("IN", _one("dealtype", "IN", values=["newbusiness", "existingbusiness"]),
     lambda p: p["dealtype"] in ("newbusiness", "existingbusiness")),
    ("NOT_IN", _one("hs_priority", "NOT_IN", values=["high", "low"]),
     lambda p: p["hs_priority"] not in ("high", "low")),
    ("HAS_PROPERTY", _one("description", "HAS_PROPERTY"), lambda p: bool(p["description"])),
    ("NOT_HAS_PROPERTY", _one("hs_priority", "NOT_HAS_PROPERTY"),
     lambda p: not p["hs_priority"]),
    ("CONTAINS_TOKEN", _one("dealname", "CONTAINS_TOKEN", value="renewal"),
     lambda p: "renewal" in p["dealname"].lower().split()),
]


@pytest.mark.parametrize("body,pred", [(b, p) for _, b, p in OPERATOR_CASES],
                         ids=[name for name, _, _ in OPERATOR_CASES])
def test_operator(server, acme, live_deals, body, pred):
    results, total = search_all(acme, server.base_url, body)
    expected = _ids(live_deals, pred)
    assert expected, "the case should match something"
    assert [d["id"] for d in results] == expected  # default order: id ascending
    assert total == len(expected)


def test_groups_are_ored_and_filters_anded(server, acme, live_deals):
    body = {"filterGroups": [
        {"filters": [{"propertyName": "pipeline", "operator": "EQ", "value": "default"},
                     {"propertyName": "hs_is_closed_won", "operator": "EQ", "value": "true"}]},
        {"filters": [{"propertyName": "custom_region", "operator": "EQ", "value": "APAC"}]},
    ]}
    results, total = search_all(acme, server.base_url, body)
    expected = _ids(live_deals, lambda p: (p["pipeline"] == "default"
                                           and p["hs_is_closed_won"] == "true")
                    or p["custom_region"] == "APAC")
    assert [d["id"] for d in results] == expected
    assert total == len(expected)


def test_sorting_and_tie_break(server, acme, live_deals):
    body = {"sorts": [{"propertyName": "amount", "direction": "DESCENDING"}],
            "properties": ["amount"]}
    results, _ = search_all(acme, server.base_url, body)
    with_amount = [d for d in live_deals if _num(d["properties"]["amount"]) is not None]
    expected = sorted(with_amount, key=lambda d: int(d["id"]))
    expected.sort(key=lambda d: _num(d["properties"]["amount"]), reverse=True)
    got = [d["id"] for d in results]
    assert got[: len(expected)] == [d["id"] for d in expected]
    assert len(got) == len(live_deals)  # deals without a numeric amount come last
    asc, _ = search_all(acme, server.base_url, {"sorts": ["-createdate"]})
    stamps = [_ms(d["properties"]["createdate"]) for d in asc]
    assert stamps == sorted(stamps, reverse=True)


def test_same_lastmodified_sorts_by_id(server, acme):
    portal = server.portal("acme")
    portal.set_all_lastmodified(1_700_000_000_000)
    body = {"filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate",
                                           "operator": "EQ", "value": "1700000000000"}]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "properties": ["hs_lastmodifieddate"], "limit": 50}
    results, total = search_all(acme, server.base_url, body)
    assert [d["id"] for d in results] == portal.deal_ids()
    assert total == len(portal.deal_ids())
    assert {d["properties"]["hs_lastmodifieddate"] for d in results} == {
        "2023-11-14T22:13:20.000Z"}


def test_search_sees_writes_and_skips_archived(server, acme):
    portal = server.portal("acme")
    base = server.base_url
    target = portal.deal_ids()[5]
    portal.update_deal(target, {"amount": "31337"})
    results, _ = search_all(acme, base, _one("amount", "EQ", value="31337"))
    assert [d["id"] for d in results] == [target]
    portal.archive_deal(target)
    results, total = search_all(acme, base, _one("amount", "EQ", value="31337"))
    assert results == [] and total == 0
    new_id = portal.create_deal({"dealname": "Fresh one", "amount": "31337"})
    results, _ = search_all(acme, base, _one("amount", "EQ", value="31337"))
    assert [d["id"] for d in results] == [new_id]


def test_date_columns_follow_writes(server, acme):
    portal = server.portal("acme")
    base = server.base_url
    body = _one("hs_lastmodifieddate", "GTE", value="1800000000000")
    assert search_all(acme, base, body)[1] == 0  # builds the date column only
    target = portal.deal_ids()[3]
    portal.update_deal(target, {"hs_priority": "low"}, at_ms=1_800_000_000_000)
    new_id = portal.create_deal({"dealname": "Later"}, at_ms=1_800_000_000_500)
    results, total = search_all(acme, base, body)
    assert [d["id"] for d in results] == [target, new_id] and total == 2
    portal.set_all_lastmodified(1_800_000_001_000, ids=[portal.deal_ids()[0]])
    assert search_all(acme, base, body)[1] == 3
    created, _ = search_all(acme, base, _one("createdate", "GTE", value="1800000000000"))
    assert [d["id"] for d in created] == [new_id]
    # A non-date filter afterwards builds the other columns; dates stay right.
    both = {"filterGroups": [{"filters": [
        {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "1800000000000"},
        {"propertyName": "hs_priority", "operator": "EQ", "value": "low"}]}]}
    assert [d["id"] for d in search_all(acme, base, both)[0]] == [target]


def test_search_selects_properties_and_pages(server, acme, live_deals):
    base = server.base_url
    r = acme.post(base + SEARCH, json={"properties": ["dealname", "no_such"], "limit": 7})
    body = r.json()
    assert body["total"] == len(live_deals)
    assert len(body["results"]) == 7
    assert all(set(d["properties"]) == {"dealname"} for d in body["results"])
    assert body["paging"]["next"]["after"] == "7"
    default = acme.post(base + SEARCH, json={}).json()
    assert len(default["results"]) == 10
    assert "hs_lastmodifieddate" in default["results"][0]["properties"]


def test_search_validation_errors(server, acme):
    base = server.base_url
    bad_bodies = [
        {"limit": 201},
        {"sorts": ["amount", "dealname"]},
        _one("no_such_property", "EQ", value="x"),
        _one("amount", "LIKE", value="1"),
        _one("amount", "GT", value="not-a-number"),
        _one("dealtype", "IN"),
        _one("createdate", "BETWEEN", value="1"),
        {"filterGroups": [{"filters": []}] * 6},
        {"after": "abc"},
    ]
    for body in bad_bodies:
        r = acme.post(base + SEARCH, json=body)
        assert r.status_code == 400, body
        err = r.json()
        assert err["category"] == "VALIDATION_ERROR" and err["correlationId"]
    assert acme.post(base + SEARCH, data=b"{").status_code == 400
    assert acme.post(base + SEARCH, json={"limit": 200}).status_code == 200


def test_search_10k_cap(make_server):
    server = make_server({"big": "tok-big"}, deals=10_300, seed=3)
    base = server.base_url
    live = len(server.portal("big").deal_ids())
    assert live > 10_000
    with session_for("tok-big") as s:
        after: str | None = None
        seen = 0
        while True:
            body: dict[str, Any] = {"limit": 200, "properties": ["dealname"]}
            if after:
                body["after"] = after
            r = s.post(base + SEARCH, json=body)
            if after == "10000":
                assert r.status_code == 400
                err = r.json()
                assert err["category"] == "VALIDATION_ERROR"
                assert "10000" in err["message"]
                break
            assert r.status_code == 200, r.text
            page = r.json()
            assert page["total"] == live
            seen += len(page["results"])
            after = page["paging"]["next"]["after"]
        assert seen == 10_000
        assert s.post(base + SEARCH, json={"limit": 200, "after": "9900"}).status_code == 400
        assert s.post(base + SEARCH, json={"limit": 100, "after": "9900"}).status_code == 200
        # Narrowing the query (the documented workaround) reaches the rest.
        last_id = server.portal("big").deal_ids()[9_999]
        rest, total = search_all(s, base, _one("hs_object_id", "GT", value=last_id))
        assert total == live - 10_000 == len(rest)


def test_unfiltered_searches_keep_their_own_order(server, acme):
    """The live deals' indices are kept between searches: a sorted search must not reorder
    them for the next one."""
    portal = server.portal("acme")
    base = server.base_url
    by_created = {"sorts": [{"propertyName": "createdate", "direction": "DESCENDING"}]}
    newest_first, _ = search_all(acme, base, by_created)
    assert [d["id"] for d in newest_first] != portal.deal_ids()
    plain, _ = search_all(acme, base, {})
    assert [d["id"] for d in plain] == portal.deal_ids()
    filtered, _ = search_all(acme, base, _one("createdate", "HAS_PROPERTY"))
    assert [d["id"] for d in filtered] == portal.deal_ids()
