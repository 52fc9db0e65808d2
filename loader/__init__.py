"""HubSpot deals ELT: dlt extraction, scan jobs, dbt transformation."""

# Environment defaults (telemetry off, Arrow's allocator) before any module imports dlt, dbt or
# pyarrow: see settings.
from . import settings as _settings  # noqa: E402, F401
