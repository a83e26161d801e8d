"""Owns the list of every key a topology file accepts, read from the model, so the manual
(README "Workflows") can be checked against it and cannot drift.

Must not describe keys in prose; the README does.
"""

from __future__ import annotations

from typing import Any, get_args, get_origin

from pydantic import BaseModel

from streams.topology._errors import unwrap
from streams.topology._model import TopologyIn


def topology_keys() -> tuple[str, ...]:
    """Every key path the file accepts, in model order. A mapping keyed by names the user
    picks shows its name as a placeholder: `stages.<stage>.concurrency`,
    `intake.tenants.<tenant>.weight`, `intake.lanes.<lane>.delay_s`."""
    return tuple(_walk(TopologyIn, ""))


def _walk(model: type[BaseModel], prefix: str) -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        keys.append(path)
        tp: Any = unwrap(field.annotation)
        if get_origin(tp) is dict:
            # stages -> <stage>, tenants -> <tenant>, lanes -> <lane>
            path = f"{path}.<{name.removesuffix('s')}>"
            keys.append(path)
            tp = unwrap(get_args(tp)[1])
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            keys.extend(_walk(tp, f"{path}."))
    return keys
