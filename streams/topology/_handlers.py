"""Owns importing a stage's handler from its "package.module:function" reference and
checking it can take (event, ctx).

Must not call the handler; importing its module runs only that module's top level.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from streams.topology._errors import Problem


def import_handler(ref: str) -> Callable[..., Any]:
    """The handler `ref` names. Raises Problem (at the empty path) saying why not."""
    module_name, _, attr_path = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # user code: its import may fail any way at all
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.split(".")[0]:
            hint = " (run from the project root, or put its directory on PYTHONPATH)"
        raise Problem(
            (), f"cannot import {module_name!r}: {type(exc).__name__}: {exc}{hint}"
        ) from None
    target: object = module
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise Problem((), f"module {module_name!r} has no attribute {attr_path!r}")
        target = getattr(target, part)
    if not callable(target):
        raise Problem((), f"{ref!r} is not callable (it is a {type(target).__name__})")
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # some builtins have no signature; nothing to check
        return target
    try:
        signature.bind(None, None)
    except TypeError as exc:
        raise Problem((), f"{ref!r} must accept (event, ctx): {exc}") from None
    return target
