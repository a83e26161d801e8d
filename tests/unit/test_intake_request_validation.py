"""Hostile input at the intake's door: every check that can refuse a request runs before
Intake.asubmit touches Kafka, and the HTTP app answers every non-2xx, on every path and
method, as JSON with a reason, never a 5xx for a client's bytes.

The HTTP app is driven in-process (httpx's ASGI transport) over a stand-in intake whose
asubmit runs the real check_request first, as Intake.asubmit does; what reaches it past
that check counts as submitted. The real intake over loopback is
tests/integration/test_intake_fuzz.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from streams.errors import BrokerUnavailable, OutcomeUnknown
from streams.intake.http import create_app
from streams.intake.requests import Decision, InvalidRequest, RunRequest, check_request
from streams.intake.service import Intake
from streams.policy.admission import AdmissionLimits
from streams.types import LANES

WORKFLOW = "tickets"
URL = f"/v1/workflows/{WORKFLOW}/runs"
JSON = {"content-type": "application/json"}
AVRO_INT_MIN, AVRO_INT_MAX = -(2**31), 2**31 - 1
AVRO_LONG_MIN, AVRO_LONG_MAX = -(2**63), 2**63 - 1


# ---------------------------------------------------------------- check_request (pure)
def _request(**changes: Any) -> RunRequest:
    base: dict[str, Any] = {"tenant": "acme", "payload": b'{"n":1}'}
    return RunRequest(**{**base, **changes})


def _refusal(request: RunRequest) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        check_request(request, LANES)
    return caught.value


def test_a_plain_request_passes() -> None:
    check_request(
        _request(
            idempotency_key="k-1",
            priority=AVRO_INT_MAX,
            deadline_ms=AVRO_LONG_MAX,
            trace_context={"traceparent": "00-ab-cd-01"},
        ),
        LANES,
    )
    check_request(_request(priority=AVRO_INT_MIN, deadline_ms=AVRO_LONG_MIN), LANES)


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"tenant": "ac\ud800me"}, "tenant"),
        ({"tenant": "\udfff"}, "tenant"),
        ({"tenant": ""}, "tenant"),
        ({"tenant": "   "}, "tenant"),
        ({"tenant": "t" * 201}, "tenant"),
        ({"idempotency_key": "key-\udc80"}, "idempotency_key"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 201}, "idempotency_key"),
        ({"trace_context": {"trace\ud800parent": "x"}}, "trace_context"),
        ({"trace_context": {"traceparent": "\udbff"}}, "trace_context"),
        ({"priority": AVRO_INT_MAX + 1}, "priority"),
        ({"priority": AVRO_INT_MIN - 1}, "priority"),
        ({"priority": 2**64}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"priority": float("nan")}, "priority"),
        ({"priority": True}, "priority"),
        ({"deadline_ms": AVRO_LONG_MAX + 1}, "deadline_ms"),
        ({"deadline_ms": AVRO_LONG_MIN - 1}, "deadline_ms"),
        ({"deadline_ms": 1.7e12}, "deadline_ms"),
        ({"deadline_ms": False}, "deadline_ms"),
        ({"lane": "express"}, "lane"),
        ({"payload": "not bytes"}, "payload"),
    ],
)
def test_a_request_no_capacity_could_make_valid_is_refused_with_its_field(
    changes: dict[str, Any], field_name: str
) -> None:
    refusal = _refusal(_request(**changes))
    assert refusal.status == 422
    assert refusal.field == field_name
    assert refusal.problem


def test_a_run_whose_event_cannot_be_published_is_413() -> None:
    from streams.intake.requests import MAX_EVENT_BYTES

    refusal = _refusal(_request(payload=b'"' + b"x" * MAX_EVENT_BYTES + b'"'))
    assert (refusal.status, refusal.field) == (413, "payload")
    check_request(_request(payload=b"x" * (MAX_EVENT_BYTES - 10_000)), LANES)
    many = {f"k{i}": "v" * 1000 for i in range(MAX_EVENT_BYTES // 1000)}
    assert _refusal(_request(trace_context=many)).status == 413


def test_the_ranges_checked_are_the_schemas() -> None:
    from streams.intake import requests

    schema = json.loads((Path(__file__).parents[2] / "schemas/task_event.avsc").read_text())
    types = {f["name"]: f["type"] for f in schema["fields"]}
    assert types["priority"] == "int"
    assert types["deadline"][1]["type"] == "long"
    assert requests.PRIORITY_RANGE == (AVRO_INT_MIN, AVRO_INT_MAX)
    assert requests.DEADLINE_MS_RANGE == (AVRO_LONG_MIN, AVRO_LONG_MAX)


# ---------------------------------------------------------------- the HTTP app
@dataclass
class _StandIn:
    """What create_app reads of an Intake; asubmit checks like the real one, then answers
    `answer` (a Decision) or raises it (an exception)."""

    answer: Decision | BaseException = field(
        default_factory=lambda: Decision(
            "accepted", "admitted", "standard", "standard", run_id="r" * 32
        )
    )
    submitted: list[RunRequest] = field(default_factory=list)
    topology: Any = field(default_factory=lambda: SimpleNamespace(workflow=WORKFLOW, lanes=LANES))
    config: Any = field(
        default_factory=lambda: SimpleNamespace(max_body_bytes=65_536, default_lane="standard")
    )
    limits: AdmissionLimits = field(default_factory=lambda: AdmissionLimits(100, 10))
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    readable: bool = True

    def status(self, run_id: str, *, find_stage: bool = False) -> None:
        return None  # no such run

    def health(self) -> tuple[bool, str]:
        return self.readable, "" if self.readable else "the broker is unreadable"

    async def asubmit(self, request: RunRequest) -> Decision:
        check_request(request, self.topology.lanes)
        self.submitted.append(request)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


@pytest.fixture
def stand_in() -> _StandIn:
    return _StandIn()


class AppClient:
    """Requests to the app in this process, one event loop per request (what a server
    adds, routing and errors included, is the app's own; only the socket is missing)."""

    def __init__(self, app: Starlette) -> None:
        self._transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def one() -> httpx.Response:
            async with httpx.AsyncClient(
                transport=self._transport, base_url="http://intake"
            ) as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(one())

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)


@pytest.fixture
def http(stand_in: _StandIn) -> Iterator[AppClient]:
    yield AppClient(create_app(cast(Intake, stand_in)))


def _good(**changes: Any) -> dict[str, Any]:
    return {"tenant": "acme", "payload": {"n": 1}, **changes}


def _assert_json_reason(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("reason"), str) and body["reason"]
    return cast(dict[str, Any], body)


def test_a_good_request_reaches_the_intake(http: AppClient, stand_in: _StandIn) -> None:
    response = http.post(URL, json=_good(priority=7, trace_context={"a": "b"}))
    assert response.status_code == 202, response.text
    [request] = stand_in.submitted
    assert (request.tenant, request.priority, request.payload) == ("acme", 7, b'{"n":1}')


@pytest.mark.parametrize("depth", [1000, 5000, 101])
def test_json_nested_too_deep_is_400_not_a_recursion_error(
    http: AppClient, stand_in: _StandIn, depth: int
) -> None:
    for body in (
        "[" * depth + "]" * depth,
        '{"a":' * depth + "1" + "}" * depth,
        json.dumps(_good())[:-1] + ', "payload": ' + "[" * depth + "]" * depth + "}",
    ):
        _assert_json_reason(http.post(URL, content=body, headers=JSON), 400)
    assert stand_in.submitted == []


def test_json_nested_to_the_limit_is_accepted(http: AppClient, stand_in: _StandIn) -> None:
    from streams.intake.json_body import MAX_DEPTH

    payload = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)  # the body object is one level
    body = '{"tenant": "acme", "payload": ' + payload + "}"
    assert http.post(URL, content=body, headers=JSON).status_code == 202
    assert len(stand_in.submitted) == 1


@pytest.mark.parametrize(
    "body",
    [
        '{"tenant": "ac\\ud800me", "payload": 1}',
        '{"tenant": "acme", "idempotency_key": "\\udc00", "payload": 1}',
        '{"tenant": "acme", "trace_context": {"\\ud83d": "v"}, "payload": 1}',
        '{"tenant": "acme", "trace_context": {"k": "\\ude00"}, "payload": 1}',
        '{"tenant": "acme", "payload": "\\ud800"}',
        '{"tenant": "acme", "payload": {"deep": [{"\\udfff": 1}]}}',
        '{"tenant": "acme", "payload": ["ok \\ud83d\\ude00", "lone \\ud83d"]}',
        '{"tenant": "acme", "lane": "\\ud800", "payload": 1}',
        '{"\\ud800": 1, "tenant": "acme", "payload": 1}',
    ],
)
def test_lone_surrogates_anywhere_are_422(http: AppClient, stand_in: _StandIn, body: str) -> None:
    _assert_json_reason(http.post(URL, content=body.encode(), headers=JSON), 422)
    assert stand_in.submitted == []


def test_a_surrogate_pair_is_one_character_and_fine(http: AppClient, stand_in: _StandIn) -> None:
    body = '{"tenant": "acme \\ud83d\\ude00", "payload": "\\ud83d\\ude00"}'
    assert http.post(URL, content=body, headers=JSON).status_code == 202
    [request] = stand_in.submitted
    assert request.tenant == "acme \U0001f600"
    assert json.loads(request.payload) == "\U0001f600"


@pytest.mark.parametrize(
    "body",
    [
        b'{"tenant": "ac\xffme", "payload": 1}',
        b'{"tenant": "acme", "payload": "\xc3"}',
        # A UTF-8-encoded surrogate (CESU-style): not UTF-8, though json.loads lets it pass.
        b'{"tenant": "ac\xed\xa0\x80me", "payload": 1}',
        b'{"tenant": "acme", "payload": "\xed\xbf\xbf"}',
        b'{"tenant": "acme", "payload": "\xc0\xaf"}',  # overlong
        '{"tenant": "acme", "payload": 1}'.encode("utf-16"),
        '{"tenant": "acme", "payload": 1}'.encode("utf-32-le"),
    ],
)
def test_a_body_that_is_not_utf8_is_400(http: AppClient, stand_in: _StandIn, body: bytes) -> None:
    _assert_json_reason(http.post(URL, content=body, headers=JSON), 400)
    assert stand_in.submitted == []


@pytest.mark.parametrize(
    "run",
    [
        _good(priority=2**31),
        _good(priority=-(2**31) - 1),
        _good(priority=10**30),
        _good(priority=1.0),
        _good(priority=True),
        _good(deadline_ms=2**63),
        _good(deadline_ms=-(2**63) - 1),
        _good(deadline_ms=1.7e12),
        _good(deadline_ms=None, priority=None),
        _good(trace_context={"a": 1}),
        _good(trace_context=[]),
        _good(tenant=5),
        _good(lane=["urgent"]),
        _good(lane={"x": 1}),
        _good(idempotency_key=0),
    ],
)
def test_numbers_and_types_the_encoder_cannot_hold_are_422(
    http: AppClient, stand_in: _StandIn, run: dict[str, Any]
) -> None:
    _assert_json_reason(http.post(URL, json=run), 422)
    assert stand_in.submitted == []


@pytest.mark.parametrize(
    "body",
    [
        '{"tenant": "acme", "priority": NaN, "payload": 1}',
        '{"tenant": "acme", "deadline_ms": Infinity, "payload": 1}',
        '{"tenant": "acme", "payload": NaN}',
        '{"tenant": "acme", "payload": {"x": -Infinity}}',
        '{"tenant": "acme", "payload": [1e400]}',
        '{"tenant": "acme", "priority": 1e400, "payload": 1}',
        '{"tenant": "acme", "payload": ' + "9" * 5000 + "}",
    ],
)
def test_numbers_json_cannot_carry_are_refused(
    http: AppClient, stand_in: _StandIn, body: str
) -> None:
    response = http.post(URL, content=body, headers=JSON)
    assert response.status_code in (400, 422), response.text
    _assert_json_reason(response, response.status_code)
    assert stand_in.submitted == []


@pytest.mark.parametrize("body", ["[]", '"run"', "null", "7", "true"])
def test_a_body_that_is_not_an_object_is_422(
    http: AppClient, stand_in: _StandIn, body: str
) -> None:
    _assert_json_reason(http.post(URL, content=body, headers=JSON), 422)
    assert stand_in.submitted == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("POST", "/", 404),
        ("DELETE", "/v1/workflows/tickets", 404),
        ("GET", "/v1/workflows/tickets/runs/extra", 404),
        ("PATCH", "/healthz/", 404),
        ("GET", URL, 405),
        ("PUT", URL, 405),
        ("DELETE", URL, 405),
        ("POST", "/healthz", 405),
        ("POST", "/metrics", 405),
        ("PUT", "/openapi.json", 405),
        ("POST", f"/v1/workflows/{WORKFLOW}/capacity", 405),
        ("POST", "/v1/workflows/other/runs", 404),
    ],
)
def test_every_path_and_method_answers_json_with_a_reason(
    http: AppClient, method: str, path: str, status: int
) -> None:
    body = _assert_json_reason(http.request(method, path), status)
    assert body["error"]
    if status == 405:
        assert "allow" in {k.lower() for k in http.request(method, path).headers}


def test_an_unknown_workflow_with_a_surrogate_renders(http: AppClient) -> None:
    body = _assert_json_reason(http.post("/v1/workflows/%ED%A0%80/runs", json=_good()), 404)
    assert body["error"] == "unknown_workflow"


def test_an_unexpected_failure_is_a_json_500(http: AppClient, stand_in: _StandIn) -> None:
    stand_in.answer = RuntimeError("internals 42")
    body = _assert_json_reason(http.post(URL, json=_good()), 500)
    assert body["error"] == "internal_error"
    assert "internals 42" not in body["reason"]  # internals stay in the log


def test_broker_unavailable_is_a_503_with_retry_after(http: AppClient, stand_in: _StandIn) -> None:
    stand_in.answer = BrokerUnavailable("no leader for the ledger")
    response = http.post(URL, json=_good())
    body = _assert_json_reason(response, 503)
    assert body["outcome"] == "unavailable"
    assert "nothing was accepted" in body["reason"]
    assert int(response.headers["retry-after"]) >= 1
    assert body["retry_after_s"] == int(response.headers["retry-after"])


def test_an_unknown_outcome_is_a_503_that_names_the_run(
    http: AppClient, stand_in: _StandIn
) -> None:
    stand_in.answer = OutcomeUnknown("ledger entry not acknowledged", run_id="f" * 32,
                                     retry_after_s=2.5)  # fmt: skip
    response = http.post(URL, json=_good(idempotency_key="k"))
    body = _assert_json_reason(response, 503)
    assert body["outcome"] == "unknown"
    assert body["run_id"] == "f" * 32
    assert body["retry_after_s"] == 2.5
    assert response.headers["retry-after"] == "3"  # whole seconds, rounded up
    assert "nothing was accepted" not in body["reason"]
    assert "idempotency_key" in body["reason"]


def test_an_unreadable_broker_health_503_has_retry_after(
    http: AppClient, stand_in: _StandIn
) -> None:
    stand_in.readable = False
    response = http.get("/healthz")
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["reason"]


def test_the_openapi_document_lists_every_error_answer(http: AppClient) -> None:
    document = http.get("/openapi.json").json()
    submit = document["paths"]["/v1/workflows/{workflow}/runs"]["post"]["responses"]
    for status in ("400", "404", "405", "413", "415", "422", "429", "503"):
        assert status in submit, status
        schema = submit[status]["content"]["application/json"]["schema"]
        assert "reason" in schema.get("required", []) or "reason" in str(schema), status
    assert "Retry-After" in submit["503"]["headers"]
    assert "Retry-After" in submit["429"]["headers"]
    unknown = submit["503"]["content"]["application/json"]["schema"]
    assert "run_id" in str(unknown) and "unknown" in str(unknown)
    assert "Retry-After" in document["paths"]["/healthz"]["get"]["responses"]["503"]["headers"]


@pytest.mark.parametrize(
    "trace", [{"traceparent": "\\ud800"}, {"traceparent": 5}, {"tracestate": ["a"]}]
)
def test_with_tracing_on_a_hostile_trace_context_is_refused_the_same(
    stand_in: _StandIn, monkeypatch: pytest.MonkeyPatch, trace: dict[str, Any]
) -> None:
    """The traced path rewrites trace_context (its span becomes the parent): a bad value
    must be refused before that, as it is without tracing, not overwritten and accepted."""
    from opentelemetry.sdk.trace import TracerProvider

    import streams.intake.http as intake_http
    from streams.tracing import Tracing

    provider = TracerProvider()
    monkeypatch.setattr(intake_http, "configured_tracing", lambda: Tracing(provider))
    http = AppClient(create_app(cast(Intake, stand_in)))
    body = json.dumps({"tenant": "acme", "payload": 1, "trace_context": trace})
    _assert_json_reason(http.post(URL, content=body.replace("\\\\", "\\"), headers=JSON), 422)
    assert stand_in.submitted == []
    provider.shutdown()
