"""Admissions decided in batches (many submissions at once, through the Python API) keep the
ledger's guarantees: bounds hold exactly across replicas, and concurrent duplicates collapse
into one run."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from streams.intake.requests import Decision, RunRequest
from streams.intake.service import Intake
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.testing import read_events

from .intake_helpers import intake_workflow, running_intake

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def _submit_all(intake: Intake, requests: list[RunRequest]) -> list[Decision]:
    return list(await asyncio.gather(*(intake.asubmit(r) for r in requests)))


def test_many_concurrent_submissions_on_two_replicas_stop_exactly_at_the_bound(
    admin: Admin, client_config: ClientConfig
) -> None:
    bound = 37
    topology = intake_workflow(admin, {"max_queued_runs": 10_000, "max_queued_per_tenant": bound})
    requests = [RunRequest("acme", f'{{"i":{i}}}'.encode(), lane="urgent") for i in range(300)]
    with (
        running_intake(topology, client_config) as one,
        running_intake(topology, client_config) as two,
    ):

        async def both() -> list[Decision]:
            first, second = await asyncio.gather(
                _submit_all(one, requests[::2]), _submit_all(two, requests[1::2])
            )
            return first + second

        decisions = asyncio.run(both())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # each replica reads the other's entries
            counted = [i.capacity().queued_by_tenant.get("acme", 0) for i in (one, two)]
            if counted == [bound, bound]:
                break
            time.sleep(0.05)
    outcomes = Counter((d.outcome, d.reason) for d in decisions)
    assert outcomes[("accepted", "admitted")] == bound, outcomes
    assert outcomes[("rejected", "tenant_full")] == len(requests) - bound, outcomes
    assert counted == [bound, bound]
    accepted = {d.run_id for d in decisions if d.outcome == "accepted"}
    events = read_events(
        client_config, f"{topology.workflow}.plan.urgent", 3, expect=bound + 1, timeout_s=3
    )
    assert {e.run_id for e in events} == accepted


def test_concurrent_duplicates_on_two_replicas_collapse_into_one_run(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = intake_workflow(admin, {})
    same = RunRequest("acme", b'{"n":1}', lane="urgent", idempotency_key="ticket-7")
    other = RunRequest("acme", b'{"n":2}', lane="urgent", idempotency_key="ticket-8")
    with (
        running_intake(topology, client_config) as one,
        running_intake(topology, client_config) as two,
    ):

        async def both() -> list[Decision]:
            first, second = await asyncio.gather(
                _submit_all(one, [same] * 20 + [other] * 5),
                _submit_all(two, [same] * 20 + [other] * 5),
            )
            return first + second

        decisions = asyncio.run(both())
    for key_runs in (decisions[:20] + decisions[25:45], decisions[20:25] + decisions[45:]):
        outcomes = Counter(d.outcome for d in key_runs)
        assert outcomes == {"accepted": 1, "collapsed": len(key_runs) - 1}, outcomes
        assert len({d.run_id for d in key_runs}) == 1  # every duplicate names the one run
    events = read_events(
        client_config, f"{topology.workflow}.plan.urgent", 3, expect=3, timeout_s=3
    )
    assert sorted(e.payload for e in events) == [b'{"n":1}', b'{"n":2}']
