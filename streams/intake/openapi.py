"""The intake's OpenAPI 3.1 document, written by hand so it says exactly what http.py does
(a test checks every status code and field here against the live service, and a fuzz test
drives the service from it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streams.intake.json_body import MAX_DEPTH
from streams.intake.requests import (
    DEADLINE_MS_RANGE,
    MAX_EVENT_BYTES,
    MAX_IDEMPOTENCY_KEY_LEN,
    MAX_TENANT_LEN,
    PRIORITY_RANGE,
)
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
_RETRY_AFTER = {
    "Retry-After": {"description": "whole seconds to wait", "schema": {"type": "integer"}}
}
_UNAVAILABLE = {
    "type": "object",
    "required": ["error", "outcome", "reason", "retry_after_s"],
    "properties": {
        "error": {"const": "unavailable"},
        "outcome": {"const": "unavailable"},
        "reason": {"type": "string"},
        "retry_after_s": {"type": "integer"},
    },
}
_UNKNOWN = {
    "type": "object",
    "required": ["error", "outcome", "run_id", "reason", "retry_after_s"],
    "properties": {
        "error": {"const": "outcome_unknown"},
        "outcome": {"const": "unknown"},
        "run_id": {"type": "string", "description": "the run it is, if it exists"},
        "reason": {"type": "string"},
        "retry_after_s": {"type": "number"},
    },
}
_NULLABLE_INT = {"type": ["integer", "null"]}
_RUN_STATUS = {
    "type": "object",
    "required": ["run_id", "state", "finished", "tenant", "lane", "submitted_at_ms", "age_s"],
    "properties": {
        "run_id": {"type": "string"},
        "state": {
            "enum": ["undecided", "queued", "delayed", "completed", "dead_lettered", "escalated"]
        },
        "finished": {"type": "boolean"},
        "tenant": {"type": "string"},
        "lane": {"type": "string"},
        "submitted_at_ms": {"type": "integer"},
        "age_s": {"type": "number", "description": "since submission; finished: how long it took"},
        "deadline_ms": _NULLABLE_INT,
        "due_at_ms": _NULLABLE_INT,
        "finished_at_ms": _NULLABLE_INT,
        "reason": {"type": ["string", "null"], "description": "a dead letter's reason"},
        "stage": {"type": ["string", "null"], "description": "the stage a queued run is in"},
    },
}
_TEXT = "Unicode text (no lone surrogates)"
# JSON Schema counts 1.0 as an integer; the intake does not (nor true, nor 1e3).
_INTEGER = "written as an integer literal: 7, not 7.0 or 7e0"
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
        "run_state": {
            "type": ["string", "null"],
            "description": "collapsed: the existing run's state (queued, delayed, completed, "
            "dead_lettered, escalated)",
        },
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _no_route_or_method(responses: dict[str, Any]) -> dict[str, Any]:
    """What every operation may also answer: Starlette's routing errors, as JSON."""
    return {
        "404": _json(_ERROR, "no such path"),
        "405": {
            **_json(_ERROR, "method not allowed on this path"),
            "headers": {"Allow": {"schema": {"type": "string"}}},
        },
        **responses,
    }


def openapi_document(intake: Intake) -> dict[str, Any]:
    max_body = intake.config.max_body_bytes
    run_request = {
        "type": "object",
        "required": ["tenant", "payload"],
        "additionalProperties": False,
        "properties": {
            "tenant": {
                "type": "string", "minLength": 1, "maxLength": MAX_TENANT_LEN,
                "description": f"not blank; {_TEXT}",
            },
            "lane": {"enum": list(intake.topology.lanes), "default": intake.config.default_lane},
            "payload": {
                "description": "The workflow's data, any JSON (checked against its payload "
                "schema when it has one): finite numbers, strings of Unicode text",
            },
            "idempotency_key": {
                "type": ["string", "null"], "minLength": 1,
                "maxLength": MAX_IDEMPOTENCY_KEY_LEN, "description": _TEXT,
            },
            "deadline_ms": {
                "type": ["integer", "null"], "minimum": DEADLINE_MS_RANGE[0],
                "maximum": DEADLINE_MS_RANGE[1],
                "description": f"Epoch milliseconds (Avro long); {_INTEGER}",
            },
            "priority": {
                "type": "integer", "default": 0, "minimum": PRIORITY_RANGE[0],
                "maximum": PRIORITY_RANGE[1], "description": f"Avro int; {_INTEGER}",
            },
            "trace_context": {
                "type": "object", "additionalProperties": {"type": "string"},
                "description": f"keys and values {_TEXT}",
            },
        },
    }  # fmt: skip
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
                    "responses": _no_route_or_method(
                        {
                            "202": _json(_DECISION, "accepted, delayed or downgraded"),
                            "200": _json(_DECISION, "collapsed: a duplicate of an existing run"),
                            "429": {
                                **_json(_DECISION, "rejected; retry after Retry-After seconds"),
                                "headers": _RETRY_AFTER,
                            },
                            "400": _json(
                                _ERROR,
                                "malformed_json: not UTF-8, not JSON, or nested deeper than "
                                f"{MAX_DEPTH}",
                            ),
                            "404": _json(_ERROR, "unknown_workflow, or no such path"),
                            "413": _json(
                                _ERROR,
                                f"body_too_large: over {max_body} bytes, or an event over "
                                f"{MAX_EVENT_BYTES} bytes (a Kafka record's limit)",
                            ),
                            "415": _json(_ERROR, "unsupported_media_type: not application/json"),
                            "422": _json(
                                _ERROR,
                                "invalid_request (`field` names the part): missing tenant, "
                                "unknown lane or field, a number out of range, a string that "
                                "is not Unicode text, a payload not matching the workflow's "
                                "schema",
                            ),
                            "503": {
                                **_json(
                                    {"oneOf": [_UNKNOWN, _UNAVAILABLE]},
                                    "outcome unknown: the run may exist (retry with the same "
                                    "tenant and idempotency_key); or unavailable: nothing was "
                                    "accepted",
                                ),
                                "headers": _RETRY_AFTER,
                            },
                        }
                    ),
                }
            },
            "/v1/workflows/{workflow}/runs/{run_id}": {
                "get": {
                    "summary": "Where a run is: undecided, queued (with the stage it is in), "
                    "delayed (until due_at_ms), completed, dead_lettered (with the reason) "
                    "or escalated; its lane, tenant, age and deadline",
                    "parameters": [
                        {
                            "name": name,
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                        for name in ("workflow", "run_id")
                    ],
                    "responses": _no_route_or_method(
                        {
                            "200": _json(_RUN_STATUS, "the run's status"),
                            "404": _json(
                                _ERROR,
                                "unknown_workflow; unknown_run: not in the ledger (never "
                                "admitted, refused, or finished longer ago than the collapse "
                                "window)",
                            ),
                        }
                    ),
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
                    "responses": _no_route_or_method(
                        {
                            "200": {"description": "capacity report"},
                            "404": _json(_ERROR, "unknown_workflow, or no such path"),
                        }
                    ),
                }
            },
            "/healthz": {
                "get": {
                    "responses": _no_route_or_method(
                        {
                            "200": {"description": "serving"},
                            "503": {
                                **_json(_UNAVAILABLE, "broker unreadable"),
                                "headers": _RETRY_AFTER,
                            },
                        }
                    )
                }
            },
            "/metrics": {
                "get": {
                    "responses": _no_route_or_method({"200": {"description": "Prometheus text"}})
                }
            },
            "/openapi.json": {
                "get": {"responses": _no_route_or_method({"200": {"description": "this document"}})}
            },
        },
    }
