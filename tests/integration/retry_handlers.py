"""Handlers for worker subprocesses in the retry tests (`tests.integration.retry_handlers:NAME`)."""

from __future__ import annotations

from typing import Any

from streams.signals import Retry


async def retry_first_attempt(event: Any, ctx: Any) -> None:
    """Ask for a retry in 3 s on the first attempt; hand the event on after that."""
    if event.attempt == 0:
        raise Retry(after_s=3, reason="not yet")
    ctx.emit(event)
