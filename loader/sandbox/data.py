"""Deterministic, lazy generation of deal records.

Every generated deal is a pure function of ``(seed, tenant, index)``: nothing is stored for
it until a test or a write changes it (see ``portal.py``). Deal ids come from a common base,
so portals with the same seed and size share ids while their contents differ.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loader.sandbox.catalog import (
    ANALYTICS_SOURCES,
    CURRENCIES,
    CUSTOM_PIPELINE,
    DEFAULT_PIPELINE,
    EXTRA_ENUM_VALUES,
    OWNER_IDS,
    REGIONS,
    STAGES_BY_ID,
    extra_property_type,
)
from loader.sandbox.timeutil import iso_date, iso_ms, utc_ms

BASE_DEAL_ID = 10_000_000_000
"""Deal index ``i`` (0-based) has id ``BASE_DEAL_ID + 1 + i``: 10000000001, 10000000002, ..."""

CREATE_START_MS = utc_ms(2020, 1, 1)
CREATE_END_MS = utc_ms(2025, 6, 1)
ANCHOR_MS = utc_ms(2025, 9, 30)
"""The generated data's "now": no generated timestamp is later than this."""

DAY_MS = 86_400_000
ARCHIVED_PER_MILLE = 10  # ~1% of generated deals are archived

_M64 = (1 << 64) - 1


def stable_hash64(*parts: object) -> int:
    """A 64-bit hash of ``parts`` that is stable across processes (unlike ``hash()``)."""
    data = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def mix64(x: int) -> int:
    """SplitMix64 finaliser: a cheap, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def deal_id(idx: int) -> str:
    """The deal id (numeric string) of deal index ``idx``."""
    return str(BASE_DEAL_ID + 1 + idx)


def deal_index(deal_id_str: str) -> int | None:
    """The index of a deal id, or None when the string is not a sandbox deal id."""
    if not deal_id_str.isdigit():
        return None
    idx = int(deal_id_str) - BASE_DEAL_ID - 1
    return idx if idx >= 0 else None


_COMPANIES: tuple[str, ...] = (
    "Acme Corp", "Globex", "Initech", "Umbrella Logistics", "Stark Industries", "Wayne Enterprises",
    "Überweisung GmbH", "Müller & Söhne KG", "株式会社 サンプル", "株式会社 deal",
    "Café Ñandú S.A.",
    "Zürich Rückversicherung AG", "Łódź Logistics sp. z o.o.", "Αθήνα Shipping", "Москва Трейд",
    "Ålesund Fiskeri AS", "São Paulo Importadora", "Hooli", "Pied Piper", "Vandelay Industries",
    "Soylent", "Tyrell Corp", "Nakatomi Trading", "北京科技有限公司", "서울 솔루션",
    "Oceanic Airlines", "Cyberdyne Systems", "Gringotts", "Dunder Mifflin", "Blue Sun",
    "Krusty Krab", "O'Reilly & Partners", "\"Quoted\" Holdings", "Niña y Compañía",
    "Ærø Energi", "Đà Nẵng Export", "İstanbul Tekstil", "Weyland-Yutani", "Massive Dynamic",
)
_SUFFIXES: tuple[str, ...] = (
    "Q1", "Q2", "Q3", "Q4", "Renewal", "Expansion", "Pilot", "Upsell", "Enterprise licence",
    "Onboarding", "Support contract", "Multi-year", "Phase 2",
)
_EMOJI: tuple[str, ...] = ("🚀", "💰", "🔥", "✅", "🤝", "📈")
_NEXT_STEPS: tuple[str, ...] = (
    "Send proposal", "Schedule demo with CFO", "Follow up after holidays", "Legal review",
    "Wait for PO", "Call back on Monday", "Prepare SOW", "Nachfassen per E-Mail",
)
_LOST_REASONS: tuple[str, ...] = (
    "Budget", "Went with competitor", "No decision", "Timing", "Price too high",
)
_WON_REASONS: tuple[str, ...] = ("Best fit", "Price", "Existing relationship", "Features")
_PARTNERS: tuple[str, ...] = (
    "Channel Partners Ltd", "Réseau Partenaires", "パートナー株式会社", "Partner & Co",
)
_DESCRIPTIONS: tuple[str, ...] = (
    "Customer wants {n} seats; decision expected this quarter.",
    "Renewal of the {n}-seat contract, multi-currency billing.",
    "Inbound lead from webinar. Contact: Zoë Ångström.",
    "Line one\nLine two with a tab\tand \"quotes\".",
    "Preisverhandlung läuft – {n} Lizenzen.",
    "見積もりを送付済み ({n} ライセンス)",
    "Special chars: <b>bold</b> & 100% ; DROP TABLE deals; --",
)
_ODD_AMOUNTS: tuple[str, ...] = ("N/A", "1e3", "12,500", " 750 ", "-0", "TBD")

_DEFAULT_OPEN = DEFAULT_PIPELINE.stages[:5]
_CUSTOM_OPEN = CUSTOM_PIPELINE.stages[:3]


@dataclass(frozen=True, slots=True)
class BaseDeal:
    """A generated deal: property values (strings or None) and its two timestamps."""

    props: dict[str, str | None]
    created_ms: int
    updated_ms: int
    created_iso: str
    updated_iso: str


def _num(x: float) -> str:
    """Render a number the way HubSpot renders calculated numbers (no trailing ``.0``)."""
    r = round(x, 2)
    if r == int(r):
        return str(int(r))
    return repr(r)


class DealGenerator:
    """Generates the deals of one portal from ``(seed, tenant)``."""

    def __init__(self, seed: int, tenant: str) -> None:
        self.seed = seed
        self.tenant = tenant
        self.key = stable_hash64("sandbox-deals", seed, tenant)

    def _rng(self, idx: int) -> random.Random:
        return random.Random((self.key << 32) | (idx & 0xFFFFFFFF))

    def is_archived(self, idx: int) -> bool:
        """Whether generated deal ``idx`` starts archived (about 1%)."""
        return mix64(self.key ^ (idx * 0x2545F4914F6CDD1D)) % 1000 < ARCHIVED_PER_MILLE

    def archived_at_ms(self, idx: int, updated_ms: int) -> int:
        """When a generated archived deal was archived (after its last modification)."""
        return min(updated_ms + 1 + mix64(self.key + idx) % (20 * DAY_MS), ANCHOR_MS + DAY_MS)

    @staticmethod
    def _times(rand: Callable[[], float]) -> tuple[int, int]:
        """(created, updated) ms from the first three draws of a deal's random stream."""
        created = CREATE_START_MS + int(rand() * (CREATE_END_MS - CREATE_START_MS))
        # Spread modifications up to ANCHOR_MS without piling many onto ANCHOR_MS itself
        # (a pile would make every incremental scan's lookback window re-read it).
        span = max(ANCHOR_MS - created, 1)
        updated = created + (int(rand() ** 2 * 420 * DAY_MS) + int(rand() * 3_600_000)) % span
        return created, updated

    def timestamps(self, idx: int) -> tuple[int, int]:
        """Generated (created, updated) ms of deal ``idx``: the same values as ``base(idx)``
        at a fraction of the cost (search columns on dates need only these)."""
        return self._times(self._rng(idx).random)

    def base(self, idx: int) -> BaseDeal:
        """Generate deal ``idx``. Pure function of (seed, tenant, idx)."""
        r = self._rng(idx)
        rand = r.random

        def choice(seq: tuple[Any, ...]) -> Any:
            return seq[int(rand() * len(seq))]

        def randrange(lo: int, hi: int) -> int:
            return lo + int(rand() * (hi - lo))

        ident = deal_id(idx)

        created, updated = self._times(rand)

        pipeline = CUSTOM_PIPELINE if rand() < 0.25 else DEFAULT_PIPELINE
        u = rand()
        if u < 0.55:
            stage = choice(_CUSTOM_OPEN if pipeline is CUSTOM_PIPELINE else _DEFAULT_OPEN)
        elif u < 0.8:
            stage = pipeline.stages[-2]  # won
        else:
            stage = pipeline.stages[-1]  # lost
        closed = stage.is_closed
        won = stage.is_won

        # amount: mostly plain numbers as strings, sometimes empty/null, rarely odd strings.
        u = rand()
        amount_val: float | None = None
        if u < 0.005:
            amount: str | None = choice(_ODD_AMOUNTS)
        elif u < 0.035:
            amount = ""
        elif u < 0.085:
            amount = None
        elif u < 0.6:
            amount_val = float(randrange(5, 2000) * 250)
            amount = str(int(amount_val))
        else:
            amount_val = randrange(10_000, 50_000_000) / 100
            amount = _num(amount_val)

        # closedate: full ISO with ms, date-only, or null.
        u = rand()
        close_ms: int | None
        if closed:
            close_ms = created + int(rand() * max(updated - created, DAY_MS))
        else:
            close_ms = updated + int(rand() * 180 * DAY_MS)
        if u < 0.7:
            closedate: str | None = iso_ms(close_ms)
        elif u < 0.9:
            closedate = iso_date(close_ms)
            close_ms = close_ms - close_ms % DAY_MS
        else:
            closedate = None
            close_ms = None

        months_choice = rand()
        months = None if months_choice < 0.3 else (12, 24, 36, 6)[int(months_choice * 40) % 4]
        prob = float(stage.probability)
        created_iso = iso_ms(created)
        updated_iso = iso_ms(updated)
        weighted = _num(amount_val * prob) if amount_val is not None else None
        annual = _num(amount_val * 12 / months) if amount_val is not None and months else None
        amount_num = amount if amount_val is not None else None

        name = f"{choice(_COMPANIES)} – {choice(_SUFFIXES)}"
        if rand() < 0.03:
            name = f"{name} {choice(_EMOJI)}"
        if rand() < 0.01:
            name = f"  {name}  "  # stray whitespace as typed by a user

        owner = choice(OWNER_IDS) if rand() < 0.9 else None
        u = rand()
        currency = (None if u < 0.05 else "USD" if u < 0.65 else "EUR" if u < 0.85
                    else choice(CURRENCIES))
        n_contacts = randrange(0, 6)
        n_notes = randrange(0, 25)
        last_note = (created + int(rand() * (updated - created + 1))) if n_notes else None

        props: dict[str, str | None] = {
            "amount": amount,
            "amount_in_home_currency": amount_num,
            "closed_lost_reason": (choice(_LOST_REASONS)
                                   if closed and not won and rand() < 0.7 else None),
            "closed_won_reason": choice(_WON_REASONS) if won and rand() < 0.5 else None,
            "closedate": closedate,
            "createdate": created_iso,
            "days_to_close": (str(max(0, (close_ms - created) // DAY_MS))
                              if closed and close_ms is not None else None),
            "deal_currency_code": currency,
            "dealname": name,
            "dealstage": stage.id,
            "dealtype": (None if (u := rand()) < 0.15
                         else "newbusiness" if u < 0.65 else "existingbusiness"),
            "description": (choice(_DESCRIPTIONS).format(n=randrange(2, 500))
                            if rand() < 0.4 else None),
            "hs_acv": annual,
            "hs_analytics_source": choice(ANALYTICS_SOURCES) if rand() < 0.6 else None,
            "hs_arr": annual if months and months >= 12 else None,
            "hs_closed_amount": amount_num if won and amount_num is not None else "0",
            "hs_createdate": created_iso,
            "hs_deal_stage_probability": stage.probability.rstrip("0").rstrip(".")
            if stage.probability != "0.0" else "0",
            "hs_forecast_amount": weighted,
            "hs_forecast_probability": None if rand() < 0.8 else _num(round(rand(), 1)),
            "hs_is_closed": "true" if closed else "false",
            "hs_is_closed_won": "true" if won else "false",
            "hs_lastmodifieddate": updated_iso,
            "hs_mrr": _num(amount_val / months) if amount_val is not None and months else None,
            "hs_next_step": choice(_NEXT_STEPS) if rand() < 0.3 else None,
            "hs_num_of_associated_line_items": str(randrange(0, 4)),
            "hs_object_id": ident,
            "hs_object_source": choice(("CRM_UI", "CRM_UI", "API", "IMPORT", "INTEGRATION")),
            "hs_priority": (None if (u := rand()) < 0.25
                            else "low" if u < 0.5 else "medium" if u < 0.8 else "high"),
            "hs_projected_amount": weighted,
            "hs_tcv": amount_num if months else None,
            "hubspot_owner_assigneddate": (iso_ms(created + randrange(0, 3_600_000))
                                           if owner else None),
            "hubspot_owner_id": owner,
            "notes_last_contacted": (iso_ms(last_note) if last_note and rand() < 0.7 else None),
            "notes_last_updated": iso_ms(last_note) if last_note else None,
            "num_associated_contacts": str(n_contacts),
            "num_contacted_notes": str(n_notes // 2),
            "num_notes": str(n_notes),
            "pipeline": pipeline.id,
            "custom_region": choice(REGIONS) if rand() < 0.85 else None,
            "custom_contract_months": str(months) if months else None,
            "custom_renewal_date": (iso_date(close_ms + months * 30 * DAY_MS)
                                    if months and close_ms is not None and won else None),
            "custom_partner_name": choice(_PARTNERS) if rand() < 0.2 else None,
            "custom_is_strategic": (None if (u := rand()) < 0.5
                                    else "true" if u < 0.6 else "false"),
        }
        return BaseDeal(props, created, updated, created_iso, updated_iso)

    def extra_value(self, idx: int, k: int) -> str | None:
        """Value of extra custom property ``k`` on deal ``idx`` (~70% null); computed lazily."""
        h = mix64(self.key ^ mix64((idx << 20) | (k & 0xFFFFF)))
        if h % 10 < 7:
            return None
        v = h >> 8
        ptype = extra_property_type(k)
        if ptype == "string":
            return f"value {v % 997}"
        if ptype == "number":
            return str(v % 100_000) if v & 1 else _num((v % 1_000_000) / 100)
        if ptype == "enumeration":
            return EXTRA_ENUM_VALUES[v % len(EXTRA_ENUM_VALUES)]
        if ptype == "date":
            return iso_date(CREATE_START_MS + (v % 2000) * DAY_MS)
        if ptype == "bool":
            return "true" if v & 1 else "false"
        return iso_ms(CREATE_START_MS + v % (ANCHOR_MS - CREATE_START_MS))

    def history(self, idx: int, prop: str, deal: BaseDeal) -> list[dict[str, Any]]:
        """Generated value history of ``prop`` on deal ``idx``, newest first.

        ``dealstage`` gets a few stage changes through its pipeline; other properties one entry
        (their current value) or none when they have no value.
        """
        value = deal.props.get(prop)
        created, updated = deal.created_ms, deal.updated_ms
        owner = deal.props.get("hubspot_owner_id")
        source: dict[str, Any] = {"sourceType": "CRM_UI"}
        if owner:
            source = {"sourceType": "CRM_UI", "sourceId": f"userId:{owner}",
                      "updatedByUserId": int(owner) % 2_000_000_000}
        if prop == "dealstage" and value is not None:
            stage = STAGES_BY_ID[value]
            pipeline = CUSTOM_PIPELINE if value in {s.id for s in CUSTOM_PIPELINE.stages} \
                else DEFAULT_PIPELINE
            order = [s.id for s in pipeline.stages if not s.is_closed]
            if stage.is_closed:
                r = random.Random(mix64(self.key + idx * 7919))
                path = order[: r.randrange(1, len(order) + 1)] + [value]
            else:
                path = order[: order.index(value) + 1]
            path = path[-4:]
            n = len(path)
            entries = []
            for i, v in enumerate(path):
                ts = created + (updated - created) * i // max(n - 1, 1) if n > 1 else created
                entry = {"value": v, "timestamp": iso_ms(ts), **source}
                if i == 0:
                    entry["sourceType"] = "CRM_UI" if owner else "API"
                entries.append(entry)
            entries.reverse()
            return entries
        if value is None:
            return []
        if prop == "hs_lastmodifieddate":
            return [{"value": value, "timestamp": iso_ms(updated), "sourceType": "CALCULATED",
                     "sourceId": "CalculatedPropertyComputer"}]
        if prop == "hs_object_id":
            return [{"value": value, "timestamp": iso_ms(created), "sourceType": "CALCULATED"}]
        return [{"value": value, "timestamp": iso_ms(created), **source}]
