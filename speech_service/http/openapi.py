"""The OpenAPI document: the error responses each route declares, the SSE event schema, and what
FastAPI cannot see (`X-Request-ID` on every response, the configured limits)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter

from speech_service.config import ServiceSettings
from speech_service.logs import REQUEST_ID_HEADER
from speech_service.models import ModelRegistry
from speech_service.schemas import (
    ErrorResponse,
    SpeechAudioDelta,
    SpeechAudioDone,
    SpeechQualityEvent,
    SpeechStreamError,
    SpeechTimestamps,
    SpeechWithTimestamps,
)

logger = logging.getLogger(__name__)

_DESCRIPTIONS = {
    400: "Bad request: malformed JSON, an invalid voice name, an upload that is no supported audio file, …",
    401: "Missing or unknown API key",
    403: "The key lacks the scope this needs (the error names it)",
    404: "No such voice (or resource)",
    409: "The voice exists already, or is being replaced",
    412: "`If-Match` names no current version (ETag) of the voice: it changed since it was read",
    413: "The upload or the input text is over its limit",
    422: "A field is out of range or implausible (the error's `param` names it)",
    429: "Too many requests (a model queue, or the key's rate or concurrency limit); retry after `Retry-After` seconds",
    503: "A model, the store or capacity is unavailable for now (`Retry-After` when it will pass)",
    504: "The request did not finish within the configured time",
}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its `$defs` put in place: an OpenAPI document has no `$defs` to point to."""
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            return inline(defs[ref.split("/")[-1]]) if ref.startswith("#/$defs/") else {
                k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return inline(schema)


# Each event of `stream_format: "sse"` (as OpenAPI 3.2 describes a server-sent event): its data is JSON.
SPEECH_EVENT_SCHEMA = {"type": "object", "required": ["data"], "properties": {"data": {
    "type": "string", "contentMediaType": "application/json",
    "contentSchema": _inlined(TypeAdapter(SpeechAudioDelta | SpeechTimestamps | SpeechQualityEvent | SpeechAudioDone
                                          | SpeechStreamError).json_schema())}}}
# A whole speech response asked for with `timestamps`.
TIMESTAMPS_SCHEMA = _inlined(SpeechWithTimestamps.model_json_schema())

# What a route that reaches a model replica may answer besides its own errors.
MODEL_ERRORS = (429, 503, 504)


def errors_for(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the error statuses a route can answer, all in OpenAI's error shape."""
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]} for status in statuses}


def document(app: FastAPI, settings: ServiceSettings) -> None:
    """Add what FastAPI cannot see to the OpenAPI document: `X-Request-ID` on every response, and the
    configured limits the service checks (accepted model names, input length)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        request_id = {"description": "The caller's X-Request-ID, or one made for this request",
                      "required": True, "schema": {"type": "string"}}
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for response in operation.get("responses", {}).values():
                    response.setdefault("headers", {})[REQUEST_ID_HEADER] = request_id
        speech = schema.get("components", {}).get("schemas", {}).get("SpeechRequest", {}).get("properties", {})
        if speech:
            speech["model"]["enum"] = ModelRegistry.of(settings).names()
            speech["input"]["maxLength"] = settings.limits.max_input_chars
        patch = schema.get("components", {}).get("schemas", {}).get("VoicePatch", {}).get("properties", {})
        if patch:  # a voice's model is a registry name or alias, or null
            registry = ModelRegistry.of(settings)
            named = [n for n in registry.names() if n not in registry.generic]
            patch["model"] = {"anyOf": [{"enum": named}, {"type": "null"}]}
        check = schema.get("components", {}).get("schemas", {}).get("QualityCheck", {}).get("properties", {})
        for option in check.get("retries", {}).get("anyOf", []):
            if option.get("type") == "integer":
                option["maximum"] = settings.quality.max_retries
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
