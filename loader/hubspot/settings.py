"""HubSpot CRM v3 endpoints, limits and property defaults used by the deals source."""

DEALS_PATH = "/crm/v3/objects/deals"
DEALS_SEARCH_PATH = "/crm/v3/objects/deals/search"
DEALS_BATCH_READ_PATH = "/crm/v3/objects/deals/batch/read"
PROPERTIES_PATH = "/crm/v3/properties/deals"
PIPELINES_PATH = "/crm/v3/pipelines/deals"

#: Page sizes HubSpot allows: list ≤ 100 (≤ 50 with propertiesWithHistory), search ≤ 200.
LIST_PAGE_SIZE = 100
HISTORY_PAGE_SIZE = 50
SEARCH_PAGE_SIZE = 200
BATCH_READ_SIZE = 100

#: Batch reads of one call in flight at once (an incremental scan's stage-history reads for a
#: searched page; every request still passes the portal's pacer).
BATCH_READ_CONCURRENCY = 4

#: The search API returns at most this many results for one query; past it, a 400.
SEARCH_RESULT_CAP = 10_000

#: Keep every GET URL (path + query) under this many characters. HubSpot answers 414 past its
#: limit; we stay well below it and send the remaining properties in a POST batch read instead.
MAX_URL_LENGTH = 3_000

#: Search-index lag: an incremental scan re-reads this many seconds before its stored cursor.
from ..settings import DEFAULT_LOOKBACK_SECONDS  # noqa: E402, F401 - one value for the CLI too

#: The property whose history becomes ``deal_stage_history``.
STAGE_PROPERTY = "dealstage"

#: The property every object has: its id (what a walk that needs nothing else asks for).
ID_PROPERTY = "hs_object_id"

#: HubSpot's cursor property for incremental scans.
CURSOR_PROPERTY = "hs_lastmodifieddate"

#: Properties always requested even if the properties endpoint were to omit them.
REQUIRED_PROPERTIES = (
    "dealname",
    "amount",
    "dealstage",
    "pipeline",
    "createdate",
    "closedate",
    "dealtype",
    "hubspot_owner_id",
    "description",
    "deal_currency_code",
    "hs_next_step",
    "hs_priority",
    "hs_object_id",
    "hs_lastmodifieddate",
)
