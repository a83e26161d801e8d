"""The intake over HTTP (Starlette): request parsing, status codes and the OpenAPI
document. Owns the mapping between HTTP and the Intake API; decides nothing else.

Bad input never publishes anything: the checks below all run before Intake.asubmit
touches Kafka, and each answers with a JSON reason.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
from collections.abc import AsyncIterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from streams.errors import BrokerUnavailable, DeliveryError
from streams.intake.openapi import openapi_document
from streams.intake.requests import InvalidRequest, RunRequest
from streams.intake.service import Intake
from streams.types import LANES, Lane

_FIELDS = {
    "tenant",
    "lane",
    "payload",
    "idempotency_key",
    "deadline_ms",
    "priority",
    "trace_context",
}
_STATUS_BY_OUTCOME = {"accepted": 202, "delayed": 202, "downgraded": 202, "collapsed": 200}


def create_app(intake: Intake, *, freeze_heap: bool = False) -> Starlette:
    """The intake's ASGI app. ``freeze_heap`` (for a process that serves only this app, as
    `streams intake` does) moves what exists at startup out of the collector's reach; it is
    process-wide, so an app embedded in a larger process leaves it off."""
    workflow = intake.topology.workflow

    async def submit(request: Request) -> Response:
        if request.path_params["workflow"] != workflow:
            return _error(
                404, "unknown_workflow", f"no workflow {request.path_params['workflow']!r}"
            )
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _error(415, "unsupported_media_type", "send the run as application/json")
        body = await _read_limited(request, intake.config.max_body_bytes)
        if body is None:
            return _error(
                413, "body_too_large", f"the body is over {intake.config.max_body_bytes} bytes"
            )
        try:
            data = json.loads(body)
        except ValueError as exc:
            return _error(400, "malformed_json", f"the body is not JSON: {exc}")
        try:
            run = _run_request(data, intake.config.default_lane)
            decision = await intake.asubmit(run)
        except InvalidRequest as exc:
            return _error(exc.status, "invalid_request", exc.problem, field=exc.field)
        except (BrokerUnavailable, DeliveryError) as exc:
            return _error(503, "unavailable", f"{exc}; nothing was accepted, retry later")
        payload = decision.to_json()
        if decision.outcome == "rejected":
            retry = max(1, math.ceil(decision.retry_after_s or 1))
            return JSONResponse(payload, status_code=429, headers={"Retry-After": str(retry)})
        return JSONResponse(payload, status_code=_STATUS_BY_OUTCOME[decision.outcome])

    async def capacity(request: Request) -> Response:
        if request.path_params["workflow"] != workflow:
            return _error(
                404, "unknown_workflow", f"no workflow {request.path_params['workflow']!r}"
            )
        report = intake.capacity()
        first = report.first_stage
        return JSONResponse(
            {
                "workflow": workflow,
                "state": report.state,
                "why": report.why,
                "queued_by_lane": report.queued_by_lane,
                "queued_by_tenant": report.queued_by_tenant,
                "oldest_queued_age_s": report.oldest_queued_age_s,
                "delayed": report.delayed,
                "first_stage": {
                    "lag": first.lag,
                    "drain_rate_per_s": first.drain_rate_per_s,
                    "p95_handler_s": first.p95_handler_s,
                    "paused_by_downstream_pressure": first.pressure_paused,
                },
            }
        )

    async def healthz(request: Request) -> Response:
        readable = intake.capacity_feed.latest().readable
        return JSONResponse({"ok": readable}, status_code=200 if readable else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(intake.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(intake))

    return Starlette(
        lifespan=_freeze_startup_heap if freeze_heap else None,
        routes=[
            Route("/v1/workflows/{workflow}/runs", submit, methods=["POST"]),
            Route("/v1/workflows/{workflow}/capacity", capacity, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
    )


@contextlib.asynccontextmanager
async def _freeze_startup_heap(_app: Starlette) -> AsyncIterator[None]:
    """Once the server is up, what exists (modules, clients, the ledger read so far) lives
    as long as the process: gc.freeze() keeps full collections from rescanning it, which
    otherwise stop the event loop for 30-50 ms now and then (a p99 all by itself)."""
    gc.collect()
    gc.freeze()
    yield


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes `limit` bytes (without reading the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _run_request(data: Any, default_lane: Lane) -> RunRequest:
    if not isinstance(data, Mapping):
        raise InvalidRequest(422, "", "the body must be a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise InvalidRequest(
            422, unknown[0], f"unknown field (known: {', '.join(sorted(_FIELDS))})"
        )
    tenant = data.get("tenant")
    if not isinstance(tenant, str):
        raise InvalidRequest(422, "tenant", "is required and must be a string")
    lane = data.get("lane", default_lane)
    if lane not in LANES:
        raise InvalidRequest(422, "lane", f"unknown lane {lane!r} (lanes: {', '.join(LANES)})")
    if "payload" not in data:
        raise InvalidRequest(422, "payload", "is required")
    key = data.get("idempotency_key")
    if key is not None and not isinstance(key, str):
        raise InvalidRequest(422, "idempotency_key", "must be a string")
    deadline = data.get("deadline_ms")
    if deadline is not None and (not isinstance(deadline, int) or isinstance(deadline, bool)):
        raise InvalidRequest(422, "deadline_ms", "must be epoch milliseconds (an integer)")
    priority = data.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise InvalidRequest(422, "priority", "must be an integer")
    trace = data.get("trace_context", {})
    if not isinstance(trace, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in trace.items()
    ):
        raise InvalidRequest(422, "trace_context", "must map strings to strings")
    lane_value: Lane = lane
    return RunRequest(
        tenant=tenant,
        payload=json.dumps(data["payload"], separators=(",", ":")).encode(),
        lane=lane_value,
        idempotency_key=key,
        deadline_ms=deadline,
        priority=priority,
        trace_context=dict(trace),
    )


def _error(status: int, code: str, reason: str, *, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "reason": reason}
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status)
