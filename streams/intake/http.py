"""The intake over HTTP (Starlette): request parsing, status codes and the OpenAPI
document. Owns the mapping between HTTP and the Intake API; decides nothing else.

Bad input never publishes anything: the body is read as JSON text here
(streams.intake.json_body), and every check of the run (streams.intake.requests
check_request, the payload schema) runs in Intake.asubmit before it touches Kafka. Every
answer that is not a 2xx, on every path and method, is JSON with a `reason`; a client's
bytes never cause a 5xx (a 500 means a bug in the intake; a 503, always with
Retry-After, the broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Mapping
from http import HTTPStatus
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from streams.errors import BrokerUnavailable, DeliveryError, OutcomeUnknown
from streams.intake.json_body import payload_bytes, read_json
from streams.intake.openapi import openapi_document
from streams.intake.requests import Decision, InvalidRequest, RunRequest, check_request
from streams.intake.service import Intake
from streams.runtime.heap import freeze_startup_heap
from streams.tracing import Tracing, configured_tracing
from streams.types import Lane

log = logging.getLogger(__name__)

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
_DIGITS = re.compile(r"[0-9]+")
_CODE_BY_STATUS = {400: "malformed_json", 413: "body_too_large"}
_TRACE_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})


def create_app(intake: Intake, *, freeze_heap: bool = False) -> Starlette:
    """The intake's ASGI app. ``freeze_heap`` (for a process that serves only this app, as
    `streams intake` does) moves what exists at startup out of the collector's reach; it is
    process-wide, so an app embedded in a larger process leaves it off."""
    workflow = intake.topology.workflow
    # When the broker is unavailable, nothing tells how long: the shortest wait the
    # workflow's intake would ever ask of a refused caller.
    retry_after_s = intake.limits.retry_after_min_s
    tracing = configured_tracing()  # None: no span, and the request path is unchanged

    async def submit(request: Request) -> Response:
        if request.path_params["workflow"] != workflow:
            return _error(
                404, "unknown_workflow", f"no workflow {request.path_params['workflow']!r}"
            )
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _error(415, "unsupported_media_type", "send the run as application/json")
        try:
            body = await _read_limited(request, intake.config.max_body_bytes)
        except ClientDisconnect:  # nobody hears this answer; nothing was read, none sent
            return _error(400, "incomplete_body", "the client left before sending the body")
        if body is None:
            return _error(
                413, "body_too_large", f"the body is over {intake.config.max_body_bytes} bytes"
            )
        try:
            run = _run_request(read_json(body), intake.config.default_lane)
            if tracing is None:
                decision = await intake.asubmit(run)
            else:
                # The span rewrites trace_context (a bad traceparent would be overwritten
                # and accepted): refuse first, as asubmit would without tracing.
                check_request(run, intake.topology.lanes)
                decision = await _traced_submit(intake, tracing, run, request)
        except InvalidRequest as exc:
            code = _CODE_BY_STATUS.get(exc.status, "invalid_request")
            return _error(exc.status, code, exc.problem, field=exc.field)
        except OutcomeUnknown as exc:  # before BrokerUnavailable: it is one
            return _unknown_outcome(exc)
        except (BrokerUnavailable, DeliveryError) as exc:
            return _unavailable(f"{exc}; nothing was accepted, retry later", retry_after_s)
        payload = decision.to_json()
        if decision.outcome == "rejected":
            retry = max(1, math.ceil(decision.retry_after_s or 1))
            return JSONResponse(payload, status_code=429, headers={"Retry-After": str(retry)})
        return JSONResponse(payload, status_code=_STATUS_BY_OUTCOME[decision.outcome])

    async def run_status(request: Request) -> Response:
        if request.path_params["workflow"] != workflow:
            return _error(
                404, "unknown_workflow", f"no workflow {request.path_params['workflow']!r}"
            )
        run_id = request.path_params["run_id"]
        # Finding a queued run's stage reads topics: off the event loop.
        status = await asyncio.to_thread(intake.status, run_id, find_stage=True)
        if status is None:
            return _error(
                404, "unknown_run", f"no run {run_id!r} in this workflow's ledger (never "
                "admitted, refused, or finished longer ago than the collapse window)",
            )  # fmt: skip
        return JSONResponse(status.to_json())

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
                "undecided_by_tenant": report.undecided_by_tenant,
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
        # Healthy means able to decide truthfully: the broker answers and the ledger this
        # replica holds is still the broker's (not from before a data loss).
        ok, why = intake.health()
        if ok:
            return JSONResponse({"ok": True})
        return _unavailable(f"{why}: the intake cannot decide", retry_after_s)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(intake.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(intake))

    app = Starlette(
        lifespan=_freeze_startup_heap if freeze_heap else None,
        routes=[
            Route("/v1/workflows/{workflow}/runs", submit, methods=["POST"]),
            Route("/v1/workflows/{workflow}/runs/{run_id}", run_status, methods=["GET"]),
            Route("/v1/workflows/{workflow}/capacity", capacity, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    # A trailing slash is another path, not a redirect (a 307 that a POST would follow).
    app.router.redirect_slashes = False
    return app


@contextlib.asynccontextmanager
async def _freeze_startup_heap(_app: Starlette) -> AsyncIterator[None]:
    """Once the server is up, what exists (modules, clients, the ledger read so far) lives
    as long as the process: gc.freeze() keeps full collections from rescanning it, which
    otherwise stop the event loop for 30-50 ms now and then (a p99 all by itself)."""
    freeze_startup_heap()
    yield


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes `limit` bytes (without reading the rest)."""
    declared = request.headers.get("content-length")
    # ASCII digits only: str.isdigit() is also true of "²", which int() refuses.
    if declared is not None and _DIGITS.fullmatch(declared) and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _traced_submit(
    intake: Intake, tracing: Tracing, run: RunRequest, request: Request
) -> Decision:
    """asubmit inside the submission's span; the run continues the caller's trace (the
    body's traceparent, else the request's header) from that span."""
    body = run.trace_context if isinstance(run.trace_context, Mapping) else {}
    header = {k: v for k, v in request.headers.items() if k in _TRACE_HEADERS}
    with tracing.submission(
        intake.topology.workflow, tenant=str(run.tenant), lane=str(run.lane), header=header,
        body=body,
    ) as submission:  # fmt: skip
        decision = await intake.asubmit(
            dataclasses.replace(run, trace_context=submission.trace_context)
        )
        submission.decided(decision.outcome, decision.reason, decision.run_id)
        return decision


def _run_request(data: Any, default_lane: Lane) -> RunRequest:
    """The run the body asks for. Only its shape is checked here; its values are checked
    by check_request, in Intake.asubmit, before anything is written."""
    if not isinstance(data, Mapping):
        raise InvalidRequest(422, "", "the body must be a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise InvalidRequest(
            422, unknown[0], f"unknown field (known: {', '.join(sorted(_FIELDS))})"
        )
    if "payload" not in data:
        raise InvalidRequest(422, "payload", "is required")
    return RunRequest(
        tenant=data.get("tenant", ""),
        payload=payload_bytes(data["payload"]),
        lane=data.get("lane", default_lane),
        idempotency_key=data.get("idempotency_key"),
        deadline_ms=data.get("deadline_ms"),
        priority=data.get("priority", 0),
        trace_context=data.get("trace_context", {}),
    )


def _error(status: int, code: str, reason: str, *, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "reason": reason}
    if field:
        body["field"] = field
    return _AsciiJSON(body, status_code=status)


def _unavailable(reason: str, retry_after_s: float) -> JSONResponse:
    """503: the broker, not the request; nothing was accepted."""
    retry = _whole_seconds(retry_after_s)
    body = {"error": "unavailable", "outcome": "unavailable", "reason": reason,
            "retry_after_s": retry}  # fmt: skip
    return _AsciiJSON(body, status_code=503, headers={"Retry-After": str(retry)})


def _unknown_outcome(exc: OutcomeUnknown) -> JSONResponse:
    """503, but not a refusal: the run may exist. The caller learns its id and how to
    find out (the same tenant and idempotency_key collapse into it if it does)."""
    body = {
        "error": "outcome_unknown",
        "outcome": "unknown",
        "run_id": exc.run_id,
        "reason": f"{exc}; the run {exc.run_id} may exist: retry with the same tenant and "
        "idempotency_key, which collapses into it if it does",
        "retry_after_s": exc.retry_after_s,
    }
    headers = {"Retry-After": str(_whole_seconds(exc.retry_after_s))}
    return _AsciiJSON(body, status_code=503, headers=headers)


def _whole_seconds(seconds: float) -> int:
    """Retry-After takes whole seconds: round up, at least 1."""
    return max(1, math.ceil(seconds)) if math.isfinite(seconds) else 1


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (no route: 404; a route without the method: 405, with
    Allow), as JSON like every other."""
    assert isinstance(exc, HTTPException)  # registered for HTTPException only
    status = exc.status_code
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "HTTP error"
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    if status == 404:
        reason = f"no such path {request.url.path!r} (see /openapi.json)"
    elif status == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        reason = f"{request.method} is not allowed on {request.url.path!r} (allowed: {allowed})"
    else:
        reason = exc.detail if isinstance(exc.detail, str) and exc.detail else phrase
    return _AsciiJSON({"error": code, "reason": reason}, status_code=status, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug in the intake, not the caller's doing. Starlette re-raises it after this
    answer, so the server logs its traceback; here one line names the request. The
    answer says so without internals."""
    log.error("intake: %s %s failed: %s", request.method, request.url.path, type(exc).__name__)
    return _error(500, "internal_error", "the intake failed on this request (logged); it is a bug")


class _AsciiJSON(JSONResponse):
    """JSON in ASCII: a reason may quote the caller's text, lone surrogates included,
    which UTF-8 cannot encode (Starlette's JSONResponse would fail rendering it)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")
