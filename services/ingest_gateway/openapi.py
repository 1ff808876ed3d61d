"""The OpenAPI 3.1 document of the ingest API, built from the same models that validate.

``openapi.json`` beside this file is what the gateway serves at ``/openapi.json``; a test
fails when it differs from ``build()``. Regenerate with ``python -m ingest_gateway.openapi``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ingest_gateway.body import AVRO, JSON
from ingest_gateway.models import (
    HEART_RATE_RANGE,
    MAX_STEPS_PER_MINUTE,
    SLEEP_STAGES,
    UNITS,
    UploadRequest,
)

REF = "#/components/schemas/{model}"


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "integer", "minimum": 0}}


RATE_HEADERS = {
    "RateLimit-Limit": _header("Requests allowed in the window."),
    "RateLimit-Remaining": _header("Requests left in the window."),
    "RateLimit-Reset": _header("Seconds until the window frees a request."),
}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json({"$ref": "#/components/schemas/Error"})}
    if headers:
        response["headers"] = headers
    return response


def _sample_schema() -> dict[str, Any]:
    """One variant per sample type, so unit and value ranges are part of the document.
    Rules that depend on time (the accepted history, no future samples) or on two fields
    (steps per minute of duration, end not before start) are stated in the description."""
    values: dict[str, dict[str, Any]] = {
        "step_count": {"type": "number", "minimum": 0},
        "activity_count": {"type": "number", "minimum": 0},
        "heart_rate": {"type": "number", "minimum": HEART_RATE_RANGE[0], "maximum": HEART_RATE_RANGE[1]},
        "sleep_analysis": {"type": "string", "enum": list(SLEEP_STAGES)},
    }
    return {
        "title": "Sample",
        "description": "One measurement over [start, end). Also enforced: end >= start; start no older "
                       "than the accepted history (default 30 days) and neither start nor end in the "
                       f"future; step_count at most {MAX_STEPS_PER_MINUTE:g} per minute of duration.",
        "oneOf": [
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", "start", "end", "value", "unit"],
                "properties": {
                    "type": {"const": kind},
                    "start": {"type": "string", "format": "date-time"},
                    "end": {"type": "string", "format": "date-time"},
                    "value": values[kind],
                    "unit": {"const": UNITS[kind]},
                },
            }
            for kind in sorted(UNITS)
        ],
    }


def build() -> dict[str, Any]:
    request_schema = UploadRequest.model_json_schema(ref_template=REF)
    components = request_schema.pop("$defs")
    components["UploadRequest"] = request_schema
    components["Sample"] = _sample_schema()
    components["Accepted"] = {
        "type": "object",
        "required": ["upload_id", "accepted", "trace_id"],
        "properties": {
            "upload_id": {"type": "string", "format": "uuid"},
            "accepted": {"type": "integer", "minimum": 1, "description": "Samples stored."},
            "trace_id": {"type": ["string", "null"], "description": "W3C trace id of this upload."},
        },
    }
    components["Duplicate"] = {
        "type": "object",
        "required": ["upload_id", "accepted", "duplicate"],
        "properties": {
            "upload_id": {"type": "string", "format": "uuid"},
            "accepted": {"type": "integer", "minimum": 1},
            "duplicate": {"const": True},
        },
    }
    components["Erasure"] = {
        "type": "object",
        "required": ["erasure_id", "key_destroyed", "idempotency_entries_deleted"],
        "properties": {
            "erasure_id": {"type": "string", "format": "uuid",
                           "description": "Names this erasure in the audit trail (config.audit.v1)."},
            "key_destroyed": {"type": "boolean", "description": "False: nothing to destroy (erased before, "
                                                                "or the user never uploaded)."},
            "idempotency_entries_deleted": {"type": "integer", "minimum": 0},
        },
    }
    components["Export"] = {
        "type": "object",
        "required": ["format", "user_id", "exported_at", "window", "result"],
        "description": "The user's data as the platform holds it now (prediction_worker/export.py).",
        "properties": {
            "format": {"const": "circadia-export@1"},
            "user_id": {"type": "string"},
            "exported_at": {"type": "string", "format": "date-time"},
            "window": {
                "type": ["object", "null"],
                "description": "null: nothing held (never uploaded, or erased). The trailing 7 days by minute: "
                               "per device its activity count class and its series (step_count, "
                               "activity_count, heart_rate as the minute's mean; null where a minute has no "
                               "data), the device-reported sleep stages, the uploads applied.",
                "required": ["start", "minutes", "utc_offset_minutes", "devices", "sleep", "uploads_applied"],
                "properties": {
                    "start": {"type": "string", "format": "date-time"},
                    "minutes": {"type": "integer"},
                    "utc_offset_minutes": {"type": "integer"},
                    "devices": {"type": "object", "additionalProperties": {"type": "object"}},
                    "sleep": {"type": "array", "items": {"type": "object"}},
                    "uploads_applied": {"type": "object", "additionalProperties": {"type": "integer"}},
                },
            },
            "result": {"type": ["object", "null"],
                       "description": "An io.circadia.prediction.Prediction computed on the window now."},
        },
    }
    components["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "Stable reason, e.g. invalid_token, invalid_upload."},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["loc", "msg"],
                    "properties": {
                        "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                        "msg": {"type": "string"},
                    },
                },
            },
        },
    }
    components["Readiness"] = {
        "type": "object",
        "required": ["ready", "degraded", "checks"],
        "properties": {
            "ready": {"type": "boolean"},
            "degraded": {"type": "boolean", "description": "Redis unreachable: limits fail open, "
                                                           "idempotency is at-least-once."},
            "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
    }
    retry_after = {"Retry-After": _header("Seconds to wait before retrying.")}
    upload_responses = {
        "202": {"description": "Stored: the broker acknowledged the record.",
                "content": _json({"$ref": "#/components/schemas/Accepted"}), "headers": RATE_HEADERS},
        "200": {"description": "A repeat of an upload already stored; nothing was published.",
                "content": _json({"$ref": "#/components/schemas/Duplicate"}), "headers": RATE_HEADERS},
        "401": _error("Missing, malformed, expired or foreign token.",
                      {"WWW-Authenticate": _header("Bearer challenge.", {"type": "string"})}),
        "403": _error("The body names a user other than the token's."),
        "409": _error("The upload_id was already used for different content."),
        "413": _error("Body (or decompressed body) over the size limit, or (upload_too_large) a record over what "
                      "the topic accepts; the message names the limit and the samples per part that fit."),
        "415": _error("Content-Type or Content-Encoding not accepted."),
        "422": _error("Invalid body; errors name each field."),
        "429": _error("Rate limit of the user or client address exceeded.", {**retry_after, **RATE_HEADERS}),
        "500": _error("Not stored, and a retry of the same upload cannot succeed (Kafka refused the record "
                      "for good, or the body's parser stopped)."),
        "503": _error("Not stored, and a retry can succeed (Kafka unavailable or slow, the same upload still "
                      "in flight, or the parsers busy with large bodies).", retry_after),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "circadia ingest API",
            "version": "1",
            "description": "Devices upload batches of health samples. Every 202 means the broker "
                           "durably acknowledged the upload. Bodies may be sent with "
                           "Content-Encoding: gzip.",
        },
        "servers": [{"url": "http://127.0.0.1:8080"}],
        "security": [{"firebase": []}],
        "paths": {
            "/v1/uploads": {
                "post": {
                    "operationId": "upload",
                    "summary": "Upload a batch of samples",
                    "requestBody": {
                        "required": True,
                        "content": {
                            JSON: {"schema": {"$ref": REF.format(model="UploadRequest")}},
                            AVRO: {"schema": {"type": "string", "format": "binary",
                                              "description": "Schemaless Avro of io.circadia.health.UploadRequest "
                                                             "(schemas/health/upload_request.avsc)."}},
                        },
                    },
                    "responses": upload_responses,
                }
            },
            "/v1/users/me": {
                "delete": {
                    "operationId": "eraseMe",
                    "summary": "Erase the token's user: every copy of the user's data",
                    "description": "Destroys the user's key (every record sealed with it, on every topic, "
                                   "changelog, cache and backup, reads as erased from now on), then tells "
                                   "every service to drop what it holds of the user (the worker's window, "
                                   "the fan-out history; open sockets are closed with 4410) and audits it. "
                                   "Repeatable: a second call destroys nothing and tells the services again. "
                                   "Later uploads start with a new key.",
                    "responses": {
                        "202": {"description": "The key is destroyed and the services are told.",
                                "content": _json({"$ref": "#/components/schemas/Erasure"}), "headers": RATE_HEADERS},
                        "401": _error("Missing, malformed, expired or foreign token.",
                                      {"WWW-Authenticate": _header("Bearer challenge.", {"type": "string"})}),
                        "429": _error("Rate limit of the user or client address exceeded.",
                                      {**retry_after, **RATE_HEADERS}),
                        "501": _error("This deployment has no key service: its records are not sealed and "
                                      "cannot be erased this way (development only)."),
                        "503": _error("The key service or Kafka could not be reached; repeat the request.",
                                      retry_after),
                    },
                }
            },
            "/v1/users/me/export": {
                "get": {
                    "operationId": "exportMe",
                    "summary": "A copy of the token's user's data (the current window and a result on it)",
                    "description": "Answered by the worker that holds the user's window, through Kafka; rate-"
                                   "limited like uploads. The document is sent as an attachment and never "
                                   "cached.",
                    "responses": {
                        "200": {"description": "The export document.",
                                "content": _json({"$ref": "#/components/schemas/Export"}),
                                "headers": {**RATE_HEADERS, "Content-Disposition": _header(
                                    "attachment; filename=circadia-export-<date>.json", {"type": "string"})}},
                        "401": _error("Missing, malformed, expired or foreign token.",
                                      {"WWW-Authenticate": _header("Bearer challenge.", {"type": "string"})}),
                        "429": _error("Rate limit of the user or client address exceeded.",
                                      {**retry_after, **RATE_HEADERS}),
                        "500": _error("The worker's reply did not authenticate; a retry will not help."),
                        "503": _error("No answer in time (the worker, Kafka or the key service unavailable); "
                                      "retry.", retry_after),
                    },
                }
            },
            "/healthz": {"get": {"operationId": "healthz", "security": [], "responses": {
                "200": {"description": "The process serves requests.", "content": _json({
                    "type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}})}}}},
            "/readyz": {"get": {"operationId": "readyz", "security": [], "responses": {
                "200": {"description": "Kafka reachable.",
                        "content": _json({"$ref": "#/components/schemas/Readiness"})},
                "503": {"description": "Kafka unreachable.",
                        "content": _json({"$ref": "#/components/schemas/Readiness"})}}}},
            "/metrics": {"get": {"operationId": "metrics", "security": [], "responses": {
                "200": {"description": "Prometheus text exposition.",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"operationId": "openapi", "security": [], "responses": {
                "200": {"description": "This document.", "content": _json({"type": "object"})}}}},
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"firebase": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                             "description": "Firebase ID token (RS256)."}},
        },
    }


def main() -> None:
    json.dump(build(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
