"""`streams runs get`: where one run is, read from Kafka alone (the run ledger `W.runs`,
the completed and dead-letter topics, and for a queued run the stages' input topics), or
asked of a running intake (`GET /v1/workflows/W/runs/{run_id}`).

Owns those two readings and the printed answer; must not write anything (an operator's
question must not change the ledger, so no intake replica is started: replicas write).
The answer is the intake's own RunStatus (streams.intake.run_status), built the same way.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

from streams.errors import ConfigError, StreamsError
from streams.intake.config import load_intake_config
from streams.intake.run_stage import find_run_stage
from streams.intake.run_status import RunStatus, run_status
from streams.intake.state import RunStateView
from streams.kafka.client_config import ClientConfig
from streams.serde import SchemaStore
from streams.topology import Topology


class IntakeAnswerError(StreamsError):
    """The running intake did not answer the question (unreachable, or a 5xx)."""


def status_from_kafka(
    topology: Topology, client: ClientConfig, run_id: str, *, find_stage_timeout_s: float = 10.0
) -> RunStatus | None:
    """The run's status from the ledger, like Intake.status(run_id, find_stage=True); None
    when the ledger does not know it."""
    config = load_intake_config(topology)
    view = RunStateView(client, topology, SchemaStore(), collapse_window_s=config.dedupe_window_s)
    try:
        view.catch_up()
        found = view.run(run_id)
    finally:
        view.close()
    if found is None:
        return None
    status = run_status(found, int(time.time() * 1000))
    if status.state != "queued":
        return status
    stage = find_run_stage(
        client, topology, config.entry_stage, run_id, status.submitted_at_ms,
        timeout_s=find_stage_timeout_s,
    )  # fmt: skip
    return replace(status, stage=stage)


def status_from_intake(base_url: str, workflow: str, run_id: str) -> dict[str, Any] | None:
    """GET the run's status from a running intake: its JSON, or None for 404."""
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError("--intake-url", "", f"{base_url!r}: give http://host:port")
    url = f"{base_url.rstrip('/')}/v1/workflows/{workflow}/runs/{run_id}"
    try:
        with urllib.request.urlopen(url, timeout=30.0) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        with exc:
            if exc.code == 404:
                return None
            raise IntakeAnswerError(f"{url} answered {exc.code}: {exc.read()[:200]!r}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise IntakeAnswerError(f"{url}: {exc}") from exc


def status_text(status: dict[str, Any], topology_file: str) -> str:
    """Where the run is, in a line or two, from RunStatus.to_json()'s fields."""
    run_id, state = status["run_id"], status["state"]
    where = {
        "queued": f"queued in stage {status.get('stage') or '(not found in any stage input)'}",
        "delayed": f"delayed: enters the first stage at {_when(status.get('due_at_ms'))}",
        "undecided": "undecided: its submission is being decided or its outcome settled",
        "completed": "completed",
        "dead_lettered": f"dead_lettered ({status.get('reason') or '?'})",
        "escalated": f"escalated ({status.get('reason') or 'handed to people'})",
    }.get(state, state)
    took = "took" if status.get("finished") else "age"
    lines = [
        f"run {run_id}: {where}",
        f"  tenant {status['tenant']}, lane {status['lane']}, submitted "
        f"{_when(status['submitted_at_ms'])}, {took} {status['age_s']:.1f} s, deadline "
        f"{_when(status.get('deadline_ms'))}",
    ]
    if status.get("finished_at_ms") is not None:
        lines.append(f"  finished {_when(status['finished_at_ms'])}")
    if state in ("dead_lettered", "escalated"):
        lines.append(f"  see: streams dlq show {topology_file} --run-id {run_id}")
    return "\n".join(lines)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))
