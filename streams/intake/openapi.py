"""The intake's OpenAPI 3.1 document, written by hand so it says exactly what http.py does
(a test checks every status code and field here against the live service)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streams.types import LANES

if TYPE_CHECKING:
    from streams.intake.service import Intake

_ERROR = {
    "type": "object",
    "required": ["error", "reason"],
    "properties": {
        "error": {"type": "string"},
        "reason": {"type": "string"},
        "field": {"type": "string"},
    },
}
_DECISION = {
    "type": "object",
    "required": ["outcome", "reason", "lane", "requested_lane"],
    "properties": {
        "outcome": {"enum": ["accepted", "delayed", "downgraded", "rejected", "collapsed"]},
        "reason": {"type": "string"},
        "run_id": {"type": ["string", "null"]},
        "lane": {"enum": list(LANES)},
        "requested_lane": {"enum": list(LANES)},
        "due_at_ms": {"type": ["integer", "null"]},
        "retry_after_s": {"type": ["number", "null"]},
        "forecast_wait_s": {"type": ["number", "null"]},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(intake: Intake) -> dict[str, Any]:
    max_body = intake.config.max_body_bytes
    run_request = {
        "type": "object",
        "required": ["tenant", "payload"],
        "additionalProperties": False,
        "properties": {
            "tenant": {"type": "string", "minLength": 1, "maxLength": 200},
            "lane": {"enum": list(intake.topology.lanes), "default": "standard"},
            "payload": {"description": "The workflow's data (checked against its payload schema)"},
            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 200},
            "deadline_ms": {"type": "integer", "description": "Epoch milliseconds"},
            "priority": {"type": "integer", "default": 0},
            "trace_context": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": f"streams intake: {intake.topology.workflow}", "version": "1"},
        "paths": {
            "/v1/workflows/{workflow}/runs": {
                "post": {
                    "summary": "Submit a run; learn whether it was accepted, delayed, "
                    "downgraded, collapsed into an existing run, or rejected",
                    "parameters": [
                        {
                            "name": "workflow",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": run_request}},
                    },
                    "responses": {
                        "202": _json(_DECISION, "accepted, delayed or downgraded"),
                        "200": _json(_DECISION, "collapsed: a duplicate of an existing run"),
                        "429": {
                            **_json(_DECISION, "rejected; retry after Retry-After seconds"),
                            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        },
                        "400": _json(_ERROR, "malformed JSON"),
                        "404": _json(_ERROR, "unknown workflow"),
                        "413": _json(_ERROR, f"body over {max_body} bytes"),
                        "415": _json(_ERROR, "not application/json"),
                        "422": _json(
                            _ERROR,
                            "invalid run: missing tenant, unknown lane, "
                            "payload not matching the workflow's schema",
                        ),
                        "503": _json(_ERROR, "broker unavailable: nothing was accepted"),
                    },
                }
            },
            "/v1/workflows/{workflow}/capacity": {
                "get": {
                    "summary": "Queued runs per lane and tenant, oldest queued age, "
                    "admission state and why",
                    "parameters": [
                        {
                            "name": "workflow",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {"description": "capacity report"},
                        "404": _json(_ERROR, "unknown workflow"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "responses": {
                        "200": {"description": "serving"},
                        "503": {"description": "broker unreadable"},
                    }
                }
            },
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text"}}}},
        },
    }
