"""Static schema of the sandbox portals: deal pipelines and deal property definitions.

Shapes follow HubSpot's ``Pipeline``/``PipelineStage`` (pipelines.json) and ``Property``
(properties.json) schemas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loader.sandbox.timeutil import iso_ms, utc_ms


@dataclass(frozen=True)
class Stage:
    """One deal stage: id, label, win probability (as HubSpot's metadata string), closed flag."""

    id: str
    label: str
    probability: str
    is_closed: bool

    @property
    def is_won(self) -> bool:
        """A closed stage with probability 1.0 is a won stage."""
        return self.is_closed and self.probability == "1.0"


@dataclass(frozen=True)
class Pipeline:
    """A deal pipeline with its ordered stages."""

    id: str
    label: str
    display_order: int
    created_ms: int
    stages: tuple[Stage, ...]


DEFAULT_PIPELINE = Pipeline(
    id="default",
    label="Sales Pipeline",
    display_order=0,
    created_ms=0,  # HubSpot: "The default pipelines will have createdAt = 0."
    stages=(
        Stage("appointmentscheduled", "Appointment Scheduled", "0.2", False),
        Stage("qualifiedtobuy", "Qualified To Buy", "0.4", False),
        Stage("presentationscheduled", "Presentation Scheduled", "0.6", False),
        Stage("decisionmakerboughtin", "Decision Maker Bought-In", "0.8", False),
        Stage("contractsent", "Contract Sent", "0.9", False),
        Stage("closedwon", "Closed Won", "1.0", True),
        Stage("closedlost", "Closed Lost", "0.0", True),
    ),
)

# Custom pipelines in real portals have numeric ids, and so do their stages.
CUSTOM_PIPELINE = Pipeline(
    id="31457290",
    label="Enterprise Renewals",
    display_order=1,
    created_ms=utc_ms(2021, 2, 3) + 41_234_567,
    stages=(
        Stage("93475812", "Discovery", "0.1", False),
        Stage("93475813", "Proposal Sent", "0.5", False),
        Stage("93475814", "Negotiation", "0.7", False),
        Stage("93475815", "Renewed", "1.0", True),
        Stage("93475816", "Churned", "0.0", True),
    ),
)

PIPELINES: tuple[Pipeline, ...] = (DEFAULT_PIPELINE, CUSTOM_PIPELINE)
STAGES_BY_ID: dict[str, Stage] = {s.id: s for p in PIPELINES for s in p.stages}

OWNER_IDS: tuple[str, ...] = (
    "71234567", "71234568", "71234590", "80012345", "80012377", "91100231", "91100232", "120045",
)

CURRENCIES: tuple[str, ...] = ("USD", "EUR", "GBP", "JPY", "CHF")
REGIONS: tuple[str, ...] = ("EMEA", "NA", "APAC", "LATAM")
ANALYTICS_SOURCES: tuple[str, ...] = (
    "OFFLINE", "ORGANIC_SEARCH", "DIRECT_TRAFFIC", "REFERRALS", "PAID_SEARCH", "SOCIAL_MEDIA",
)

# Properties HubSpot returns for a deal when the request names none.
DEFAULT_PROPERTIES: tuple[str, ...] = (
    "amount", "closedate", "createdate", "dealname", "dealstage",
    "hs_lastmodifieddate", "hs_object_id", "pipeline",
)

_STD_CREATED_MS = utc_ms(2019, 8, 6) + 14_401_234
_STD_UPDATED_MS = utc_ms(2024, 11, 19) + 52_011_873
_CUSTOM_CREATED_MS = utc_ms(2022, 4, 12) + 33_300_100

# name, label, type, fieldType, groupName, calculated, description
_STANDARD: tuple[tuple[str, str, str, str, str, bool, str], ...] = (
    ("amount", "Amount", "number", "number", "dealinformation", False,
     "The total amount of the deal"),
    ("amount_in_home_currency", "Amount in company currency", "number", "calculation_equation",
     "dealinformation", True, "The amount of the deal, using the exchange rate, in your "
     "company's currency"),
    ("closed_lost_reason", "Closed Lost Reason", "string", "textarea", "dealinformation", False,
     "Reason why this deal was lost"),
    ("closed_won_reason", "Closed Won Reason", "string", "textarea", "dealinformation", False,
     "Reason why this deal was won"),
    ("closedate", "Close Date", "datetime", "date", "dealinformation", False,
     "Date the deal was closed. Set automatically by HubSpot."),
    ("createdate", "Create Date", "datetime", "date", "dealinformation", False,
     "Date the deal was created. This property is set automatically by HubSpot."),
    ("days_to_close", "Days to close", "number", "calculation_equation", "dealinformation", True,
     "The number of days the deal took to close"),
    ("deal_currency_code", "Currency", "enumeration", "select", "dealinformation", False,
     "Currency code for the deal."),
    ("dealname", "Deal Name", "string", "text", "dealinformation", False,
     "The name given to this deal."),
    ("dealstage", "Deal Stage", "enumeration", "radio", "dealinformation", False,
     "The stage of the deal. Deal stages allow you to categorize and track the progress of "
     "the deals that you are working on."),
    ("dealtype", "Deal Type", "enumeration", "radio", "dealinformation", False,
     "The type of deal. By default, categorize your deal as either New Business or Existing "
     "Business."),
    ("description", "Deal Description", "string", "textarea", "dealinformation", False,
     "Description of the deal"),
    ("hs_acv", "Annual contract value", "number", "calculation_equation", "dealinformation", True,
     "The annual contract value (ACV) of this deal."),
    ("hs_analytics_source", "Original Source Type", "enumeration", "select", "analyticsinformation",
     True, "Original source for the contact with the earliest activity for this deal."),
    ("hs_arr", "Annual recurring revenue", "number", "calculation_equation", "dealinformation",
     True, "The annual recurring revenue (ARR) of this deal."),
    ("hs_closed_amount", "Closed Deal Amount", "number", "calculation_equation",
     "dealinformation", True, "Returns the amount if the deal is closed won, 0 otherwise."),
    ("hs_createdate", "HubSpot Create Date", "datetime", "date", "dealinformation", False,
     "The date the deal was created."),
    ("hs_deal_stage_probability", "Deal probability", "number", "calculation_equation",
     "dealinformation", True, "The probability a deal will close. This defaults to the deal "
     "stage probability setting."),
    ("hs_forecast_amount", "Forecast amount", "number", "calculation_equation",
     "dealinformation", True, "The deal's amount multiplied by its forecast probability."),
    ("hs_forecast_probability", "Forecast probability", "number", "number", "dealinformation",
     False, "The custom forecasted deal probability."),
    ("hs_is_closed", "Is Deal Closed?", "bool", "booleancheckbox", "dealinformation", True,
     "True if the deal is in a closed stage."),
    ("hs_is_closed_won", "Is Closed Won", "bool", "booleancheckbox", "dealinformation", True,
     "True if the deal is in the closed won state."),
    ("hs_lastmodifieddate", "Last Modified Date", "datetime", "date", "dealinformation", True,
     "Most recent timestamp of any property update for this deal."),
    ("hs_mrr", "Monthly recurring revenue", "number", "calculation_equation", "dealinformation",
     True, "The monthly recurring revenue (MRR) of this deal."),
    ("hs_next_step", "Next step", "string", "textarea", "dealinformation", False,
     "A short description of the next step for the deal"),
    ("hs_num_of_associated_line_items", "Number of associated line items", "number",
     "calculation_rollup", "dealinformation", True,
     "The number of line items associated with this deal"),
    ("hs_object_id", "Record ID", "number", "number", "dealinformation", True,
     "The unique ID for this record. This value is set automatically by HubSpot."),
    ("hs_object_source", "Record source", "string", "text", "dealinformation", True,
     "Raw internal PropertySource present in the RequestMeta when this record was created."),
    ("hs_priority", "Priority", "enumeration", "select", "dealinformation", False, ""),
    ("hs_projected_amount", "Weighted amount", "number", "calculation_equation",
     "dealinformation", True, "Returns the multiplication of the amount times the probability."),
    ("hs_tcv", "Total contract value", "number", "calculation_equation", "dealinformation", True,
     "The total contract value (TCV) of this deal."),
    ("hubspot_owner_assigneddate", "Owner Assigned Date", "datetime", "date", "dealinformation",
     True, "The most recent timestamp of when an owner was assigned to this record."),
    ("hubspot_owner_id", "Deal owner", "enumeration", "select", "dealinformation", False,
     "User the deal is assigned to."),
    ("notes_last_contacted", "Last Contacted", "datetime", "date", "deal_activity", True,
     "The last time a call, sales email, or meeting was logged for this deal."),
    ("notes_last_updated", "Last Activity Date", "datetime", "date", "deal_activity", True,
     "The last time a note, call, email, meeting, or task was logged for a deal."),
    ("num_associated_contacts", "Number of Associated Contacts", "number", "number",
     "dealinformation", True, "The number of contacts associated with this deal."),
    ("num_contacted_notes", "Number of times contacted", "number", "number", "deal_activity",
     True, "The number of times a call, email or meeting was logged for this deal"),
    ("num_notes", "Number of Sales Activities", "number", "number", "deal_activity", True,
     "The total number of sales activities logged for the deal."),
    ("pipeline", "Pipeline", "enumeration", "select", "dealinformation", False,
     "The pipeline the deal is in. This determines which stages are options for the deal."),
)

# Custom properties every sandbox portal has (values generated per deal).
_BUILTIN_CUSTOM: tuple[tuple[str, str, str, str, str], ...] = (
    ("custom_region", "Region", "enumeration", "select", "Sales region of the deal"),
    ("custom_contract_months", "Contract length (months)", "number", "number",
     "Length of the contract in months"),
    ("custom_renewal_date", "Renewal date", "date", "date", "When the contract renews"),
    ("custom_partner_name", "Partner", "string", "text", "Reselling partner, if any"),
    ("custom_is_strategic", "Strategic account", "bool", "booleancheckbox",
     "Flagged as a strategic account"),
)

# Types of the extra generated custom properties ("custom_field_0001", ...), cycled.
EXTRA_TYPES: tuple[tuple[str, str], ...] = (
    ("string", "text"),
    ("number", "number"),
    ("enumeration", "select"),
    ("date", "date"),
    ("bool", "booleancheckbox"),
    ("datetime", "date"),
)
EXTRA_ENUM_VALUES: tuple[str, ...] = ("alpha", "beta", "gamma", "delta")

PROPERTY_TYPES: dict[str, str] = {row[0]: row[2] for row in _STANDARD}
PROPERTY_TYPES.update({row[0]: row[2] for row in _BUILTIN_CUSTOM})
STANDARD_PROPERTY_NAMES: tuple[str, ...] = tuple(row[0] for row in _STANDARD)
BUILTIN_CUSTOM_NAMES: tuple[str, ...] = tuple(row[0] for row in _BUILTIN_CUSTOM)
BASE_PROPERTY_NAMES: tuple[str, ...] = STANDARD_PROPERTY_NAMES + BUILTIN_CUSTOM_NAMES


def extra_property_name(k: int) -> str:
    """Name of the k-th (0-based) extra generated custom property."""
    return f"custom_field_{k + 1:04d}"


def extra_property_type(k: int) -> str:
    """HubSpot type of the k-th extra custom property."""
    return EXTRA_TYPES[k % len(EXTRA_TYPES)][0]


def _option(label: str, value: str, order: int, description: str | None = None) -> dict[str, Any]:
    opt: dict[str, Any] = {"label": label, "value": value, "displayOrder": order, "hidden": False}
    if description is not None:
        opt["description"] = description
    return opt


_BOOL_OPTIONS = [_option("Yes", "true", 0), _option("No", "false", 1)]


def _options_for(name: str) -> list[dict[str, Any]]:
    if name == "dealstage":
        out = []
        for p in PIPELINES:
            for i, s in enumerate(p.stages):
                out.append(_option(s.label, s.id, i, f"{p.label}: {s.label}"))
        return out
    if name == "pipeline":
        return [_option(p.label, p.id, p.display_order) for p in PIPELINES]
    if name == "dealtype":
        return [_option("New Business", "newbusiness", 0),
                _option("Existing Business", "existingbusiness", 1)]
    if name == "hs_priority":
        return [_option("Low", "low", 0), _option("Medium", "medium", 1),
                _option("High", "high", 2)]
    if name == "deal_currency_code":
        return [_option(c, c, i) for i, c in enumerate(CURRENCIES)]
    if name == "hs_analytics_source":
        return [_option(s.replace("_", " ").title(), s, i)
                for i, s in enumerate(ANALYTICS_SOURCES)]
    if name == "custom_region":
        return [_option(r, r, i) for i, r in enumerate(REGIONS)]
    return []


def _definition(
    name: str, label: str, ptype: str, field_type: str, group: str, description: str,
    *, hubspot_defined: bool, calculated: bool, display_order: int, created_ms: int,
    updated_ms: int, options: list[dict[str, Any]],
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "updatedAt": iso_ms(updated_ms),
        "createdAt": iso_ms(created_ms),
        "name": name,
        "label": label,
        "type": ptype,
        "fieldType": field_type,
        "description": description,
        "groupName": group,
        "options": options,
        "displayOrder": display_order,
        "calculated": calculated,
        "externalOptions": name == "hubspot_owner_id",
        "hasUniqueValue": False,
        "hidden": False,
        "modificationMetadata": {
            "archivable": not hubspot_defined,
            "readOnlyDefinition": hubspot_defined,
            "readOnlyValue": calculated,
        },
        "formField": not calculated,
        "dataSensitivity": "non_sensitive",
    }
    if hubspot_defined:
        d["hubspotDefined"] = True
    else:
        d["createdUserId"] = "9586504"
        d["updatedUserId"] = "9586504"
    if ptype == "number" and name in ("amount", "hs_acv", "hs_arr", "hs_mrr", "hs_tcv"):
        d["showCurrencySymbol"] = True
    return d


def standard_definitions() -> list[dict[str, Any]]:
    """Property definitions of HubSpot-defined deal properties plus the built-in custom ones."""
    out = []
    for i, (name, label, ptype, ftype, group, calc, desc) in enumerate(_STANDARD):
        opts = list(_BOOL_OPTIONS) if ptype == "bool" else _options_for(name)
        out.append(_definition(
            name, label, ptype, ftype, group, desc, hubspot_defined=True, calculated=calc,
            display_order=i if not calc else -1, created_ms=_STD_CREATED_MS,
            updated_ms=_STD_UPDATED_MS, options=opts,
        ))
    for i, (name, label, ptype, ftype, desc) in enumerate(_BUILTIN_CUSTOM):
        opts = list(_BOOL_OPTIONS) if ptype == "bool" else _options_for(name)
        out.append(_definition(
            name, label, ptype, ftype, "dealinformation", desc, hubspot_defined=False,
            calculated=False, display_order=-1, created_ms=_CUSTOM_CREATED_MS + i * 60_000,
            updated_ms=_CUSTOM_CREATED_MS + i * 60_000, options=opts,
        ))
    return out


def extra_definition(k: int) -> dict[str, Any]:
    """Property definition of the k-th extra generated custom property."""
    ptype, ftype = EXTRA_TYPES[k % len(EXTRA_TYPES)]
    if ptype == "bool":
        opts = list(_BOOL_OPTIONS)
    elif ptype == "enumeration":
        opts = [_option(v.title(), v, i) for i, v in enumerate(EXTRA_ENUM_VALUES)]
    else:
        opts = []
    created = _CUSTOM_CREATED_MS + 86_400_000 + k * 1_000
    return _definition(
        extra_property_name(k), f"Custom field {k + 1}", ptype, ftype, "dealinformation",
        f"Generated custom property #{k + 1}", hubspot_defined=False, calculated=False,
        display_order=-1, created_ms=created, updated_ms=created, options=opts,
    )


def pipeline_json(p: Pipeline) -> dict[str, Any]:
    """A pipeline in HubSpot's ``Pipeline`` shape (stage metadata values are strings)."""
    created = iso_ms(p.created_ms)
    stages = []
    for i, s in enumerate(p.stages):
        stages.append({
            "label": s.label,
            "displayOrder": i,
            "metadata": {"isClosed": "true" if s.is_closed else "false",
                         "probability": s.probability},
            "id": s.id,
            "createdAt": created,
            "updatedAt": created,
            "archived": False,
            "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
        })
    return {
        "label": p.label,
        "displayOrder": p.display_order,
        "id": p.id,
        "stages": stages,
        "createdAt": created,
        "updatedAt": created,
        "archived": False,
    }
