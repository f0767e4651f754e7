"""The HTTP API's bodies (msgspec structs, decoded and checked in one pass) and its OpenAPI.

The request struct is built from the configured limits, so the same bounds check a request
and appear in the published schema. A decoding failure becomes a message naming the field:
``k: Expected `int` <= 100``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from pipelines.core.names import VERSION_NAME
from pipelines.core.params import ServeLimits

MAX_K = 100
# ids are printable: no control characters, no lone surrogates (they cannot be encoded)
ID_PATTERN = r"^[^\x00-\x1f\x7f\ud800-\udfff]+$"
Version = Annotated[str, Meta(min_length=1, max_length=64, pattern=VERSION_NAME.pattern)]


class Recommendation(msgspec.Struct):
    """One recommended item."""

    item_id: str
    score: float


class RecommendResponse(msgspec.Struct):
    """The answer of ``POST /recommend``."""

    model_version: str
    arm: Literal["stable", "canary"]
    items: list[Recommendation]
    fallback: bool


class ErrorBody(msgspec.Struct):
    """Every 4xx and 5xx answer."""

    error: str
    detail: str
    field: str | None = None


class LoadBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /admin/load``: fetch a version from the registry, verified, and load it."""

    version: Version


class CanaryBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /admin/canary``: route ``weight`` of the users to ``version`` (null: no canary)."""

    version: Version | None
    weight: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0


class ShadowBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /admin/shadow/start``: score a copy of each stable request with ``version``."""

    version: Version


class PromoteBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /admin/promote``: make ``version`` (default: the canary) the stable version."""

    version: Version | None = None


class UnloadBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /admin/unload``: stop holding ``version`` (canary, shadow or staged)."""

    version: Version


def request_struct(limits: ServeLimits) -> type[msgspec.Struct]:
    """The ``POST /recommend`` body with the configured bounds."""
    ident = Annotated[str, Meta(min_length=1, max_length=limits.max_id_length, pattern=ID_PATTERN)]
    fields: list[Any] = [
        ("user_id", ident),
        (
            "history",
            Annotated[list[ident], Meta(max_length=limits.max_history)],
            msgspec.field(default_factory=list),
        ),
        ("k", Annotated[int, Meta(ge=1, le=MAX_K)], 10),
    ]
    return msgspec.defstruct("RecommendRequest", fields, forbid_unknown_fields=True)


_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")


def explain(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """A validation failure as ``(message naming the field, field)``."""
    text = str(exc)
    found = _AT.search(text)
    if found:
        field = found.group(1) or None
        message = text[: found.start()]
        return (f"{field}: {message}" if field else message), field
    for pattern in (_UNKNOWN, _MISSING):
        named = pattern.search(text)
        if named:
            return text, named.group(1)
    return f"body: {text}", None


_REF = "#/components/schemas/{name}"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(name="ErrorBody")}}},
    }


def _json(ref: str | None, description: str) -> dict[str, Any]:
    schema = {"$ref": _REF.format(name=ref)} if ref else {"type": "object"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi(limits: ServeLimits) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the server."""
    request = request_struct(limits)
    bodies = [
        request,
        RecommendResponse,
        ErrorBody,
        LoadBody,
        CanaryBody,
        ShadowBody,
        PromoteBody,
        UnloadBody,
    ]
    _, components = msgspec.json.schema_components(bodies, ref_template=_REF)
    client: list[dict[str, list[str]]] = [{"clientToken": []}]
    admin: list[dict[str, list[str]]] = [{"adminToken": []}]
    auth_errors = {
        "401": _error("Missing or unknown token"),
        "403": _error("The token may not use this endpoint"),
        "429": _error("Rate limit of the token reached (see Retry-After)"),
    }
    body_errors = {
        "400": _error("Malformed JSON or body"),
        "413": _error("Body too large"),
        "415": _error("Not application/json"),
        "422": _error("A field is missing, of the wrong type or out of bounds (named)"),
    }

    def admin_post(summary: str, body: str | None, conflict: str) -> dict[str, Any]:
        op: dict[str, Any] = {
            "summary": summary,
            "security": admin,
            "responses": {
                "200": _json(None, "The desired state and each worker's report"),
                **auth_errors,
                **body_errors,
                "404": _error("The version is not in the registry"),
                "409": _error(conflict),
                "504": _error("A worker did not apply the change in time"),
            },
        }
        if body:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF.format(name=body)}}},
            }
        return {"post": op}

    text = {
        "description": "Prometheus text",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "recflow inference server", "version": "1"},
        "paths": {
            "/recommend": {
                "post": {
                    "summary": "Top-k items for a user's history (item ids, newest last)",
                    "security": client,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": _REF.format(name="RecommendRequest")}
                            }
                        },
                    },
                    "responses": {
                        "200": _json("RecommendResponse", "Recommendations, best first"),
                        **auth_errors,
                        **body_errors,
                        "503": _error("No model loaded yet"),
                    },
                }
            },
            "/healthz": {
                "get": {"summary": "Process alive", "responses": {"200": _json(None, "Alive")}}
            },
            "/readyz": {
                "get": {
                    "summary": "A model is loaded and answered its warm-up",
                    "responses": {"200": _json(None, "Ready"), "503": _json(None, "Not ready")},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": text}}},
            "/admin/state": {
                "get": {
                    "summary": "Desired state and what each worker serves",
                    "security": admin,
                    "responses": {"200": _json(None, "State"), **auth_errors},
                }
            },
            "/admin/load": admin_post(
                "Fetch a version from the registry (sha256-verified) and load it",
                "LoadBody",
                "The version does not load here (refused; the current model keeps serving)",
            ),
            "/admin/canary": admin_post(
                "Set the canary version and its share of users",
                "CanaryBody",
                "The version is not loaded",
            ),
            "/admin/shadow/start": admin_post(
                "Score a copy of each stable request with a version", "ShadowBody", "Not loaded"
            ),
            "/admin/shadow/stop": admin_post("Stop shadow scoring", None, "No shadow"),
            "/admin/promote": admin_post(
                "Make the canary (or a loaded version) stable", "PromoteBody", "Nothing to promote"
            ),
            "/admin/rollback": admin_post(
                "Return to the previous stable version", None, "No previous version"
            ),
            "/admin/unload": admin_post(
                "Stop holding a version that is neither stable nor the previous stable",
                "UnloadBody",
                "The version is stable, the previous stable, or was never loaded",
            ),
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "clientToken": {"type": "http", "scheme": "bearer"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }
