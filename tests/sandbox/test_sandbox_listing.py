"""List and read endpoints: paging, property selection, history, archived deals."""

from __future__ import annotations

from loader.sandbox.catalog import BASE_PROPERTY_NAMES, DEFAULT_PROPERTIES
from tests.sandbox.sandbox_helpers import walk

LIST = "/crm/v3/objects/deals"


def test_paging_walks_every_live_deal_exactly_once(server, acme):
    portal = server.portal("acme")
    deals = walk(acme, server.base_url, limit=37)
    ids = [d["id"] for d in deals]
    assert ids == portal.deal_ids()
    assert len(ids) == len(set(ids))
    assert len(ids) + len(portal.deal_ids(archived=True)) == 250
    assert [int(i) for i in ids] == sorted(int(i) for i in ids)
    assert ids[0] == "10000000001" or ids[0] == "10000000002"
    assert all(d["archived"] is False and "archivedAt" not in d for d in deals)


def test_paging_link_and_last_page(server, acme):
    base = server.base_url
    r = acme.get(base + LIST, params=[("limit", "3"), ("properties", "dealname")]).json()
    link = r["paging"]["next"]["link"]
    assert link.startswith(base + LIST + "?")
    follow = acme.get(link).json()
    assert follow["results"][0]["id"] != r["results"][-1]["id"]
    assert set(follow["results"][0]["properties"]) == {"dealname"}
    everything = acme.get(base + LIST, params={"limit": 100, "after": "10000000201"}).json()
    assert "paging" not in everything
    assert everything["results"][-1]["id"] == server.portal("acme").deal_ids()[-1]


def test_plain_deal_id_is_accepted_as_after(server, acme):
    r = acme.get(server.base_url + LIST, params={"limit": 2, "after": "10000000100"}).json()
    assert int(r["results"][0]["id"]) >= 10000000100


def test_limit_default_cap_and_invalid(server, acme):
    base = server.base_url
    assert len(acme.get(base + LIST).json()["results"]) == 10
    assert len(acme.get(base + LIST, params={"limit": 250}).json()["results"]) == 100
    for bad in ("abc", "0", "-5"):
        r = acme.get(base + LIST, params={"limit": bad})
        assert r.status_code == 400
        assert r.json()["category"] == "VALIDATION_ERROR"
    r = acme.get(base + LIST, params={"after": "not-a-cursor!"})
    assert r.status_code == 400


def test_properties_param_forms_are_equivalent(server, acme):
    base = server.base_url
    comma = acme.get(base + LIST, params={"limit": 20, "properties": "amount,dealname,pipeline"})
    repeated = acme.get(base + LIST, params=[("limit", "20"), ("properties", "amount"),
                                             ("properties", "dealname"),
                                             ("properties", "pipeline")])
    mixed = acme.get(base + LIST, params=[("limit", "20"), ("properties", "amount,dealname"),
                                          ("properties", "pipeline")])
    assert comma.json()["results"] == repeated.json()["results"] == mixed.json()["results"]
    assert (comma.json()["paging"]["next"]["after"]
            == repeated.json()["paging"]["next"]["after"])
    for d in comma.json()["results"]:
        assert set(d["properties"]) == {"amount", "dealname", "pipeline"}


def test_default_and_unknown_properties(server, acme):
    base = server.base_url
    default = acme.get(base + LIST, params={"limit": 5}).json()["results"]
    assert all(set(d["properties"]) == set(DEFAULT_PROPERTIES) for d in default)
    odd = acme.get(base + LIST, params={"limit": 5, "properties": "dealname,no_such_prop"})
    assert all(set(d["properties"]) == {"dealname"} for d in odd.json()["results"])


def test_all_properties_are_strings_or_null_and_top_level_shape(server, acme):
    deals = walk(acme, server.base_url, limit=100, properties=",".join(BASE_PROPERTY_NAMES))
    nulls = 0
    for d in deals:
        assert set(d) == {"id", "properties", "createdAt", "updatedAt", "archived"}
        assert d["properties"]["hs_object_id"] == d["id"]
        assert d["updatedAt"] == d["properties"]["hs_lastmodifieddate"]
        assert d["createdAt"] == d["properties"]["createdate"]
        assert set(d["properties"]) == set(BASE_PROPERTY_NAMES)
        for v in d["properties"].values():
            assert v is None or isinstance(v, str)
            nulls += v is None
    assert nulls > 0
    closedates = {d["properties"]["closedate"] for d in deals}
    assert any(c and len(c) == 10 for c in closedates)  # date-only values exist
    assert any(c and c.endswith("Z") and "." in c for c in closedates)
    assert None in closedates
    stages = {d["properties"]["dealstage"] for d in deals}
    assert any(s.isdigit() for s in stages)  # the custom pipeline's numeric stage ids
    names = "".join(d["properties"]["dealname"] for d in deals)
    assert any(ord(c) > 127 for c in names)


def test_properties_with_history(server, acme):
    base = server.base_url
    r = acme.get(base + LIST, params={"limit": 100, "propertiesWithHistory": "dealstage"})
    assert r.status_code == 400
    assert r.json()["category"] == "VALIDATION_ERROR"
    r = acme.get(base + LIST, params={"limit": 50, "propertiesWithHistory": "dealstage,amount"})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 50
    assert "paging" in r.json()
    multi = 0
    for d in results:
        hist = d["propertiesWithHistory"]
        assert set(hist) == {"dealstage", "amount"}
        stages = hist["dealstage"]
        assert stages[0]["value"] == d["properties"]["dealstage"]
        assert all({"value", "timestamp", "sourceType"} <= set(e) for e in stages)
        stamps = [e["timestamp"] for e in stages]
        assert stamps == sorted(stamps, reverse=True)  # newest first
        multi += len(stages) > 1
    assert multi > 0, "some deals should have several stage changes"


def test_archived_listing_and_single_reads(server, acme):
    base = server.base_url
    archived_ids = server.portal("acme").deal_ids(archived=True)
    got = walk(acme, base, archived="true", limit=2)
    assert [d["id"] for d in got] == archived_ids
    assert all(d["archived"] is True and d["archivedAt"] for d in got)
    one = archived_ids[0]
    assert acme.get(f"{base}{LIST}/{one}").status_code == 404
    r = acme.get(f"{base}{LIST}/{one}", params={"archived": "true"})
    assert r.status_code == 200 and r.json()["archived"] is True
    live = server.portal("acme").deal_ids()[0]
    assert acme.get(f"{base}{LIST}/{live}", params={"archived": "true"}).status_code == 404
    r = acme.get(f"{base}{LIST}/{live}", params={"properties": "dealname"})
    assert r.status_code == 200 and set(r.json()["properties"]) == {"dealname"}


def test_batch_read(server, acme):
    base = server.base_url
    ids = server.portal("acme").deal_ids()[:3]
    r = acme.post(f"{base}{LIST}/batch/read", json={
        "inputs": [{"id": i} for i in ids], "properties": ["dealname"],
        "propertiesWithHistory": ["dealstage"]})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "COMPLETE"
    assert [d["id"] for d in body["results"]] == ids
    assert all("dealstage" in d["propertiesWithHistory"] for d in body["results"])
    r = acme.post(f"{base}{LIST}/batch/read", json={
        "inputs": [{"id": str(10000000001 + i)} for i in range(101)], "properties": []})
    assert r.status_code == 400
    r = acme.post(f"{base}{LIST}/batch/read", json={
        "inputs": [{"id": i} for i in ids] * 20, "properties": [],
        "propertiesWithHistory": ["amount"]})
    assert r.status_code == 400  # 60 inputs > 50 with history
    r = acme.post(f"{base}{LIST}/batch/read", data=b"{not json")
    assert r.status_code == 400
