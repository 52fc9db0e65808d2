"""The sandbox renders a deal asked for by its id and timestamps alone (an archived walk's pages)
without generating it: the object must be the one the full rendering gives."""

from __future__ import annotations

import itertools

from loader.sandbox.portal import Portal


def _portal() -> Portal:
    portal = Portal("acme", "token", deals=300, seed=11)
    ids = portal.deal_ids()
    for n, deal_id in enumerate(ids[:40]):
        portal.update_deal(deal_id, {"dealname": f"changed {n}"}, at_ms=1_760_000_000_000 + n)
    for deal_id in ids[40:50]:
        portal.archive_deal(deal_id, at_ms=1_760_100_000_000)
    created = [portal.create_deal({"dealname": f"new {n}"}, at_ms=1_760_200_000_000 + n)
               for n in range(5)]
    portal.archive_deal(created[0], at_ms=1_760_300_000_000)
    portal.archive_deal(ids[0], at_ms=1_760_300_000_001)  # changed, then archived
    portal.set_all_lastmodified(1_760_400_000_000, ids[100:110])
    return portal


def _full(portal: Portal, idx: int, names: list[str]) -> dict:
    """``render`` through the generating path (one more property), that property dropped."""
    obj = portal.render(idx, [*names, "dealname"])
    if "dealname" not in names:
        del obj["properties"]["dealname"]
    return obj


def test_id_only_render_matches_full_render():
    portal = _portal()
    assert portal.id_columns == {"hs_object_id", "createdate", "hs_createdate",
                                 "hs_lastmodifieddate"}
    subsets = [list(c) for k in range(4) for c in itertools.combinations(
        sorted(portal.id_columns), k + 1)]
    with portal.lock:
        archived = [i for i in range(portal.count) if portal.is_archived(i)]
        assert len(archived) > 10  # generated ones and the ones archived here
        for idx, names in itertools.product(range(portal.count), subsets):
            assert portal.render(idx, names) == _full(portal, idx, names), (idx, names)


def test_id_only_render_after_a_bulk_stamp():
    portal = _portal()
    portal.set_all_lastmodified(1_760_500_000_000)
    portal.update_deal(portal.deal_ids()[5], {"amount": "10"}, at_ms=1_760_600_000_000)
    names = ["hs_object_id", "hs_lastmodifieddate"]
    with portal.lock:
        for idx in range(portal.count):
            assert portal.render(idx, names) == _full(portal, idx, names), idx
