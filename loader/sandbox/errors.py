"""HubSpot-shaped error bodies and the exception handlers raise to send them."""

from __future__ import annotations

import uuid
from typing import Any

AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


def correlation_id() -> str:
    """A fresh correlation id (a UUID, as the spec's ``Error.correlationId`` format says)."""
    return str(uuid.uuid4())


def error_body(
    category: str, message: str, *, context: dict[str, list[str]] | None = None,
    errors: list[dict[str, Any]] | None = None, sub_category: str | None = None,
    cid: str | None = None,
) -> dict[str, Any]:
    """HubSpot's error shape: ``{status, message, correlationId, category, ...}``."""
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": cid or correlation_id(),
        "category": category,
    }
    if sub_category:
        body["subCategory"] = sub_category
    if context:
        body["context"] = context
    if errors:
        body["errors"] = errors
    return body


class ApiError(Exception):
    """Raised by a handler to answer with a HubSpot error body."""

    def __init__(
        self, status: int, category: str, message: str, *,
        context: dict[str, list[str]] | None = None,
        errors: list[dict[str, Any]] | None = None, sub_category: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.context = context
        self.errors = errors
        self.sub_category = sub_category

    def body(self) -> dict[str, Any]:
        """The JSON body for this error."""
        return error_body(self.category, self.message, context=self.context,
                          errors=self.errors, sub_category=self.sub_category)


def validation_error(message: str, **kw: Any) -> ApiError:
    """A 400 ``VALIDATION_ERROR``."""
    return ApiError(400, "VALIDATION_ERROR", message, **kw)


def not_found(object_id: str) -> ApiError:
    """A 404 ``OBJECT_NOT_FOUND`` for a deal id."""
    return ApiError(404, "OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric.",
                    context={"id": [object_id]})
