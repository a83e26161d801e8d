"""Handlers used by the integration tests' topologies."""

from __future__ import annotations

from typing import Any


async def noop(event: Any, ctx: Any) -> None:
    ctx.emit(event)
