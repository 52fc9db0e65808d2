"""Same seed -> identical data; tenants share deal ids but not contents."""

from __future__ import annotations

from loader.sandbox.catalog import BASE_PROPERTY_NAMES
from tests.sandbox.sandbox_helpers import TOKENS, session_for, walk

ALL = ",".join(BASE_PROPERTY_NAMES)


def _snapshot(server, token: str) -> dict:
    base = server.base_url
    with session_for(token) as s:
        return {
            "live": walk(s, base, limit=50, properties=ALL,
                         propertiesWithHistory="dealstage,amount,closedate"),
            "archived": walk(s, base, limit=100, properties=ALL, archived="true"),
            "search": s.post(base + "/crm/v3/objects/deals/search", json={
                "filterGroups": [{"filters": [{"propertyName": "amount", "operator": "GT",
                                               "value": "1000"}]}],
                "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "DESCENDING"}],
                "properties": ["dealname", "amount"], "limit": 200}).json(),
            "properties": s.get(base + "/crm/v3/properties/deals").json(),
            "pipelines": s.get(base + "/crm/v3/pipelines/deals").json(),
        }


def test_same_seed_gives_identical_responses(make_server):
    a = make_server(deals=150, seed=42, custom_properties=3)
    b = make_server(deals=150, seed=42, custom_properties=3)
    for token in TOKENS.values():
        assert _snapshot(a, token) == _snapshot(b, token)


def test_different_seed_changes_contents_not_ids(make_server):
    a = make_server(deals=80, seed=1)
    b = make_server(deals=80, seed=2)
    with session_for(TOKENS["acme"]) as s:
        da = {d["id"]: d for d in walk(s, a.base_url, limit=100, properties=ALL)}
        db = {d["id"]: d for d in walk(s, b.base_url, limit=100, properties=ALL)}
    common = set(da) & set(db)
    assert len(common) > 70
    assert all(str(10000000001 + i) in set(da) | set(db) for i in range(80))
    assert sum(da[i]["properties"] != db[i]["properties"] for i in common) == len(common)


def test_tenants_share_ids_but_not_contents(server):
    pa, pg = server.portal("acme"), server.portal("globex")
    ids = [str(10000000001 + i) for i in range(250)]
    for i in ids[:50]:
        assert pa.deal(i)["id"] == pg.deal(i)["id"] == i
        assert pa.deal(i)["properties"] != pg.deal(i)["properties"]


def test_a_deal_does_not_depend_on_portal_size(make_server):
    small = make_server(deals=30, seed=9)
    large = make_server(deals=300, seed=9)
    for i in range(30):
        deal_id = str(10000000001 + i)
        assert small.portal("acme").deal(deal_id) == large.portal("acme").deal(deal_id)
