"""The two ways an operator's command reaches a workflow's admission: an intake replica of
its own (the Python `Intake`, default) or a running intake's HTTP API (`--intake-url`).

Owns the calls and turning their answers into a Decision or a stated failure; must not
decide anything (the intake does).

Why a replica by default: a replica is admission itself, not a way around it. It decides
from the run ledger every replica shares, in the ledger's one order, so the workflow's and
tenants' bounds hold exactly with the running replicas (none need be running); the
payload goes byte for byte; its decisions are written to `W.decisions` like any other
replica's (replica id `replay-...`). It does not serve the delay path (that would join
the running intakes' consumer group and move their partitions): a replay that is
`delayed` enters the first stage when a running intake forwards it. Over HTTP the request
goes through a running intake's door itself (its logs, metrics and network policy); the
payload travels as JSON, so it must be JSON, and the intake publishes it compact.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any, Protocol

from streams.errors import BrokerUnavailable, ConfigError, OutcomeUnknown, StreamsError
from streams.intake.requests import Decision, InvalidRequest, RunRequest
from streams.intake.service import Intake
from streams.kafka.client_config import ClientConfig
from streams.topology import Topology


class DoorUnavailable(StreamsError):
    """The intake did not answer, or answered 503: nothing was admitted."""


class AdmissionDoor(Protocol):
    """submit() returns the intake's decision, or raises InvalidRequest (the request
    itself is wrong), OutcomeUnknown (sent, not acknowledged) or DoorUnavailable."""

    description: str

    def submit(self, request: RunRequest) -> Decision: ...

    def close(self) -> None: ...


class ReplicaDoor:
    """An intake replica in this process, started on construction."""

    def __init__(self, topology: Topology, client: ClientConfig) -> None:
        replica = f"replay-{uuid.uuid4().hex[:6]}"
        self.description = f"intake replica {replica}"
        self._intake = Intake(topology, client, replica_id=replica, forward_delayed=False)
        self._intake.start()

    def submit(self, request: RunRequest) -> Decision:
        try:
            return self._intake.submit(request)
        except OutcomeUnknown:
            raise
        except TimeoutError as exc:  # no answer from the replica in time: it may be deciding
            raise OutcomeUnknown(
                "the intake replica did not decide in time", run_id="", retry_after_s=10.0
            ) from exc
        except BrokerUnavailable as exc:
            raise DoorUnavailable(str(exc)) from exc

    def close(self) -> None:
        self._intake.close()


class HttpDoor:
    """POST /v1/workflows/W/runs on a running intake."""

    def __init__(self, base_url: str, workflow: str, *, timeout_s: float = 30.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError("--intake-url", "", f"{base_url!r}: give http://host:port")
        self.description = f"intake at {base_url}"
        self._url = f"{base_url.rstrip('/')}/v1/workflows/{workflow}/runs"
        self._timeout_s = timeout_s

    def submit(self, request: RunRequest) -> Decision:
        try:
            payload = json.loads(request.payload)
        except ValueError:
            raise InvalidRequest(
                422, "payload", "is not JSON: only the intake replica (no --intake-url) "
                "replays it byte for byte",
            ) from None  # fmt: skip
        body = {
            "tenant": request.tenant,
            "payload": payload,
            "lane": request.lane,
            "idempotency_key": request.idempotency_key,
            "deadline_ms": request.deadline_ms,
            "priority": request.priority,
            "trace_context": dict(request.trace_context),
        }
        status, answer = self._post(json.dumps(body).encode())
        if status in (200, 202, 429):
            return _decision(answer)
        reason = str(answer.get("reason") or answer.get("error") or f"HTTP {status}")
        if status == 503 and answer.get("outcome") == "unknown":
            raise OutcomeUnknown(
                reason, run_id=str(answer.get("run_id") or ""),
                retry_after_s=float(answer.get("retry_after_s") or 10.0),
            )  # fmt: skip
        if status == 503 or status >= 500:
            raise DoorUnavailable(f"{self._url} answered {status}: {reason}")
        raise InvalidRequest(status, str(answer.get("field") or ""), reason)

    def _post(self, body: bytes) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            self._url, data=body, method="POST", headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, _json(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            raise DoorUnavailable(f"{self._url}: {exc}") from exc

    def close(self) -> None:
        pass


def _json(data: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(data)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _decision(answer: dict[str, Any]) -> Decision:
    return Decision(
        outcome=answer["outcome"],
        reason=answer["reason"],
        lane=answer["lane"],
        requested_lane=answer.get("requested_lane", answer["lane"]),
        run_id=answer.get("run_id"),
        due_at_ms=answer.get("due_at_ms"),
        retry_after_s=answer.get("retry_after_s"),
        forecast_wait_s=answer.get("forecast_wait_s"),
        run_state=answer.get("run_state"),
    )
