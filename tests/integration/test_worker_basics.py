"""A stage worker against the real broker: emits, dead letters, expiry, order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish, publish_raw, read_dead_letters, read_events

from .workflows import events, make_workflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_records_flow_to_the_next_stage(admin: Admin, client_config: ClientConfig) -> None:
    topology = make_workflow(admin, {"plan": {"downstream": ["act"]}, "act": {}})
    sent = events(topology, "plan", 200)
    publish(client_config, "%s.plan.standard" % topology.workflow, sent)
    seen: list[str] = []

    async def handler(event: Any, ctx: Any) -> None:
        seen.append(event.run_id)
        ctx.emit(event)

    worker = WorkerThread(StageWorker(topology, "plan", client_config, handler=handler)).start()
    out = read_events(client_config, f"{topology.workflow}.act.standard", 3, expect=200)
    worker.stop()
    assert worker.error is None
    assert sorted(e.run_id for e in out) == sorted(e.run_id for e in sent)
    assert all(e.stage == "act" for e in out)
    assert sorted(seen) == sorted(e.run_id for e in sent)
