"""The OpenAPI schema says what the server does: its errors and its refusal of unknown fields.

drf-spectacular documents the success answers it can see in the views; these postprocessing
hooks (``SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]``) add what the shared machinery does on
every operation, and the views declare what only they do (409, 429) with
:data:`CONFLICT` / :data:`error_response`. A test runs schemathesis against the result.
"""
from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse

from controlplane.fields import StrictModelSerializer, StrictSerializer

#: The body of every error answer: ``{"detail": "..."}`` or field errors keyed by field name
#: (nested for nested fields, by index for list items).
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": '`{"detail": message}`, or `{field: [message]}` for invalid input (nested '
                   "fields nest, list items are keyed by index).",
    "additionalProperties": True,
}


def error_response(description: str) -> OpenApiResponse:
    """An error answer a view declares itself (``responses={409: error_response(...)}``)."""
    return OpenApiResponse(OpenApiTypes.OBJECT, description=description)


CONFLICT = error_response("The object's state does not allow this.")

_ERRORS = {
    "400": "Invalid input: a field, a query parameter or the JSON itself (too deep, "
           "non-finite numbers, the wrong type); the body names what.",
    "401": "No credentials, or bad ones.",
    "403": "These credentials may not do this (a user on an agent endpoint, or the reverse).",
    "404": "No such object among those the caller may see (or no such page of a list).",
}


def _error(description: str, media_types: set[str]) -> dict[str, Any]:
    """An error answer in each media type the operation renders (CSV errors are text)."""
    content = {media_type: {"schema": {"$ref": "#/components/schemas/Error"}
                            if media_type.endswith("json") else {"type": "string"}}
               for media_type in sorted(media_types | {"application/json"})}
    return {"description": description, "content": content}


def _media_types(responses: dict[str, Any]) -> set[str]:
    return {media_type for status, response in responses.items() if status.startswith("2")
            for media_type in response.get("content", {})}


def declare_error_responses(result: dict, generator, request, public) -> dict:
    """Add the errors every operation can answer: 400 where it takes input, 401, 403 where it
    needs credentials, 404 where its path names an object or it is a paginated list."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            parameters = operation.get("parameters", [])
            wanted = {"400"} if "requestBody" in operation or any(
                p.get("in") == "query" for p in parameters) else set()
            wanted.add("401")  # bad credentials are refused even where none are needed
            if {} not in operation.get("security", []):  # anonymous callers are refused
                wanted.add("403")
            if any(p.get("in") == "path" or p.get("name") == "page" for p in parameters):
                wanted.add("404")  # no such object, or a page past the last one
            media_types = _media_types(responses)
            for status in sorted(wanted):
                responses.setdefault(status, _error(_ERRORS[status], media_types))
    return result


def forbid_unknown_fields(result: dict, generator, request, public) -> dict:
    """``additionalProperties: false`` on the request bodies of Strict serializers, which
    refuse keys they do not know."""
    schemas = result.get("components", {}).get("schemas", {})
    for (name, kind), component in generator.registry._components.items():
        if kind != "schemas" or name not in schemas:
            continue
        # COMPONENT_SPLIT_REQUEST names request components "...Request"; answers may grow.
        strict = isinstance(component.object, (StrictSerializer, StrictModelSerializer))
        if strict and name.endswith("Request") and schemas[name].get("type") == "object":
            schemas[name]["additionalProperties"] = False
    return result
