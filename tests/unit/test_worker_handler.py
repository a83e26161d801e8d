"""A worker runs the handler it is given, whatever its truth value."""

from __future__ import annotations

import pytest

from streams.events import TaskEvent
from streams.kafka.client_config import ClientConfig
from streams.runtime.context import HandlerContext
from streams.runtime.worker import StageWorker
from streams.topology import parse_topology


class EmptyLookingHandler:
    """A callable object that is falsy (len 0), like a handler class holding an empty cache."""

    def __len__(self) -> int:
        return 0

    async def __call__(self, event: TaskEvent, ctx: HandlerContext) -> None:
        return None


def test_a_falsy_handler_object_is_used_not_replaced_by_the_topologys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Untraced, so the handler is kept as it is (a TracerProvider another test set in this
    # process would wrap it; which handler is chosen is the point here).
    monkeypatch.setattr("streams.runtime.worker.configured_tracing", lambda: None)
    topology = parse_topology(
        {"workflow": "wf", "stages": {"act": {"handler": "topology.example_handlers:act"}}},
        "inline",
    )
    handler = EmptyLookingHandler()
    worker = StageWorker(topology, "act", ClientConfig("127.0.0.1:1"), handler=handler)
    assert worker._handler is handler
