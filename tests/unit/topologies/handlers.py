"""Handler references for topology tests: valid, not callable, wrong signature."""

from __future__ import annotations

from typing import Any

NOT_CALLABLE = 42


async def ok(event: Any, ctx: Any) -> None:
    return None


async def no_ctx(event: Any) -> None:
    return None


class Handlers:
    @staticmethod
    async def nested(event: Any, ctx: Any) -> None:
        return None
