"""Owns the `tools:` section once validated: the frozen ToolSpec of each tool and the checks
that span keys (burst needs a rate, adaptive replaces concurrency, stages name declared
tools), plus importing the exception classes a tool's verdicts are judged by.

Must not enforce anything at run time (streams.runtime.tools does) nor word pydantic errors.
"""

from __future__ import annotations

import builtins
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from streams.policy.adaptive_limit import AdaptiveConfig
from streams.policy.breaker import BreakerConfig
from streams.topology._errors import KeyPath, Problem, suggest
from streams.topology._model import StageIn, ToolIn

_BUILTIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_QUALIFIED = re.compile(rf"{_DOTTED}:{_DOTTED}")
_NAME = re.compile(r"[a-z0-9_-]{1,64}")
_ADAPTIVE_INITIAL = 20  # Netflix AIMD's start, within the tool's min and max


@dataclass(frozen=True, slots=True)
class ErrorClasses:
    """What a raised exception counts as for the breaker: ignored wins over failures;
    anything in neither means the tool answered (a success for its health)."""

    failures: tuple[type[BaseException], ...]
    ignored: tuple[type[BaseException], ...]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One declared tool. None for concurrency or rate means no such ceiling; `breaker`
    None means no breaker; `adaptive` set means the concurrency limit adapts between its
    min and max (and `concurrency` is None). Ceilings are fleet-wide: see
    streams.policy.tool_share for how a worker takes its share."""

    name: str
    concurrency: int | None
    rate_per_s: float | None
    burst: float | None
    timeout_s: float
    max_wait_s: float
    pause_at_waiting: int
    failure_errors: tuple[str, ...]
    ignored_errors: tuple[str, ...]
    breaker: BreakerConfig | None
    adaptive: AdaptiveConfig | None
    source: str = ""

    def error_classes(self) -> ErrorClasses:
        """Import the classes named by failure_errors and ignored_errors. Raises Problem
        (path inside the tool) if one cannot be imported or is not an exception class."""
        return ErrorClasses(
            failures=tuple(
                import_error_class(ref, ("failure_errors", i))
                for i, ref in enumerate(self.failure_errors)
            ),
            ignored=tuple(
                import_error_class(ref, ("ignored_errors", i))
                for i, ref in enumerate(self.ignored_errors)
            ),
        )


def resolve_tools(
    tools: Mapping[str, ToolIn],
    stages: Mapping[str, StageIn],
    source: str,
    import_classes: bool,
) -> dict[str, ToolSpec]:
    specs: dict[str, ToolSpec] = {}
    for name, tool in tools.items():
        at: KeyPath = ("tools", name)
        if not _NAME.fullmatch(name):
            raise Problem(
                at,
                f"must be 1-64 characters of a-z, 0-9, '_' or '-' (it names metrics), got {name!r}",
            )
        specs[name] = _spec(name, tool, at, source)
        if import_classes:
            try:
                specs[name].error_classes()
            except Problem as problem:
                raise Problem((*at, *problem.path), problem.problem) from None
    for stage_name, stage in stages.items():
        for i, tool_name in enumerate(stage.tools):
            at = ("stages", stage_name, "tools", i)
            if tool_name not in specs:
                raise Problem(
                    at, f"unknown tool {tool_name!r}{suggest(tool_name, list(specs), 'tools')}"
                )
            if tool_name in stage.tools[:i]:
                raise Problem(at, f"{tool_name!r} is listed twice")
    return specs


def _spec(name: str, tool: ToolIn, at: KeyPath, source: str) -> ToolSpec:
    if tool.burst is not None and tool.rate is None:
        raise Problem((*at, "burst"), "only with a rate: set rate too, or remove burst")
    for key, refs in (
        ("failure_errors", tool.failure_errors),
        ("ignored_errors", tool.ignored_errors),
    ):
        for i, ref in enumerate(refs):
            if not (_BUILTIN.fullmatch(ref) or _QUALIFIED.fullmatch(ref)):
                raise Problem(
                    (*at, key, i),
                    "must name an exception class: a builtin such as ConnectionError, or "
                    f"'package.module:Class', got {ref!r}",
                )
    breaker = None
    if tool.breaker is not None:
        b = tool.breaker
        if b.minimum_calls > b.window:
            raise Problem(
                (*at, "breaker", "minimum_calls"),
                f"must be at most window ({b.window}), got {b.minimum_calls}",
            )
        breaker = BreakerConfig(
            failure_ratio=b.failure_ratio,
            slow_call_ratio=b.slow_call_ratio,
            slow_call_s=tool.timeout_s if b.slow_call_s is None else b.slow_call_s,
            window=b.window,
            minimum_calls=b.minimum_calls,
            open_s=b.open_s,
            half_open_probes=b.half_open_probes,
        )
    adaptive = None
    if tool.adaptive is not None:
        a = tool.adaptive
        if a.max < a.min:
            raise Problem((*at, "adaptive", "max"), f"must be at least min ({a.min}), got {a.max}")
        initial = min(a.max, max(a.min, _ADAPTIVE_INITIAL)) if a.initial is None else a.initial
        if not a.min <= initial <= a.max:
            raise Problem(
                (*at, "adaptive", "initial"),
                f"must be between min ({a.min}) and max ({a.max}), got {initial}",
            )
        if tool.concurrency is not None:
            raise Problem(
                (*at, "adaptive"),
                "adapts the concurrency between its min and max: set concurrency or adaptive, "
                "not both",
            )
        adaptive = AdaptiveConfig(
            min_limit=a.min,
            max_limit=a.max,
            initial_limit=initial,
            latency_tolerance=a.latency_tolerance,
        )
    rate = tool.rate
    burst = None if rate is None else (max(1.0, rate) if tool.burst is None else tool.burst)
    return ToolSpec(
        name=name,
        concurrency=tool.concurrency,
        rate_per_s=rate,
        burst=burst,
        timeout_s=tool.timeout_s,
        max_wait_s=tool.max_wait_s,
        pause_at_waiting=tool.pause_at_waiting,
        failure_errors=tuple(tool.failure_errors),
        ignored_errors=tuple(tool.ignored_errors),
        breaker=breaker,
        adaptive=adaptive,
        source=source,
    )


def import_error_class(ref: str, path: KeyPath) -> type[BaseException]:
    """The exception class `ref` names: a builtin name, or "package.module:Class"."""
    if ":" in ref:
        module_name, _, attr_path = ref.partition(":")
        try:
            target: object = importlib.import_module(module_name)
        except Exception as exc:  # user code: its import may fail any way at all
            raise Problem(
                path, f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
            ) from None
        for part in attr_path.split("."):
            if not hasattr(target, part):
                raise Problem(path, f"module {module_name!r} has no attribute {attr_path!r}")
            target = getattr(target, part)
    else:
        target = getattr(builtins, ref, None)
        if target is None:
            raise Problem(path, f"{ref!r} is not a builtin; name it as 'package.module:Class'")
    if not (isinstance(target, type) and issubclass(target, BaseException)):
        raise Problem(path, f"{ref!r} is not an exception class")
    return target
