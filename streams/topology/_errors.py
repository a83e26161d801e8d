"""Owns the one way a topology mistake is told: a Problem (key path + sentence) raised while
validating, rendered into one ConfigError line with file, key path, did-you-mean and line.

Must not validate anything itself; it only words what the model and the checks found.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Callable
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError

from streams.errors import ConfigError

KeyPath = tuple[str | int, ...]

# A custom pydantic error of this type reads "must be {kind}, got <value>".
_KIND_ERROR = "streams_kind"


class Problem(Exception):
    """One validation failure at a key path; turned into a ConfigError by `config_error`."""

    def __init__(self, path: KeyPath, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


def config_error(source: str, problem: Problem, root: yaml.Node | None) -> ConfigError:
    """The user's one line: file, dotted key path, sentence and (inside the file) its line."""
    line = line_of(root, problem.path)
    # A line helps only below the top level: the whole file starts at line 1.
    suffix = f" [line {line}]" if line is not None and problem.path else ""
    return ConfigError(source, dotted(problem.path), problem.problem + suffix)


# --------------------------------------------------------------------------- model helpers


def must_be(kind: str) -> PydanticCustomError:
    """Raise inside a validator: rendered as "must be {kind}, got <value>"."""
    return PydanticCustomError(_KIND_ERROR, "must be {kind}", {"kind": kind})


def text(kind: str, *, null: bool, empty: bool = True) -> BeforeValidator:
    """A text key whose wrong-type error names what it must be (a stage name, a path...).

    With `null`, an explicit null reads as the key left out (YAML `key:` with no value).
    """

    def check(value: object) -> object:
        if value is None and null:
            return None
        if not isinstance(value, str) or (not value and not empty):
            raise must_be(kind)
        return value

    return BeforeValidator(check)


def not_null(kind: str) -> BeforeValidator:
    """A key whose default depends on other keys: left out it takes that default, but an
    explicit null is a mistake (it is not "use the default")."""

    def check(value: object) -> object:
        if value is None:
            raise must_be(kind)
        return value

    return BeforeValidator(check)


def null_is_empty() -> BeforeValidator:
    """A mapping section where YAML's `key:` with nothing under it reads as empty."""

    def check(value: object) -> object:
        return {} if value is None else value

    return BeforeValidator(check)


# --------------------------------------------------------------------------- rendering

_SENTENCES: dict[str, Callable[[dict[str, Any]], str]] = {
    "int_type": lambda ctx: "must be a whole number",
    "int_parsing": lambda ctx: "must be a whole number",
    "int_from_float": lambda ctx: "must be a whole number",
    "float_type": lambda ctx: "must be a number",
    "float_parsing": lambda ctx: "must be a number",
    "finite_number": lambda ctx: "must be a finite number",
    "string_type": lambda ctx: "must be text",
    "bool_type": lambda ctx: "must be true or false",
    "greater_than": lambda ctx: f"must be > {show(ctx['gt'])}",
    "greater_than_equal": lambda ctx: f"must be >= {show(ctx['ge'])}",
    "less_than": lambda ctx: f"must be < {show(ctx['lt'])}",
    "less_than_equal": lambda ctx: f"must be <= {show(ctx['le'])}",
    _KIND_ERROR: lambda ctx: f"must be {ctx['kind']}",
}


def from_validation_error(exc: ValidationError, model: type[BaseModel]) -> Problem:
    """Turn pydantic's first error into one plain sentence; the rest are usually echoes."""
    error = exc.errors(include_url=False)[0]
    path: KeyPath = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if path and path[-1] == "[key]":  # a mapping key of the wrong type
        return Problem(path[:-2], f"keys must be text, got {show(path[-2])}; quote it")
    if kind == "invalid_key":
        return Problem(path[:-1], f"keys must be text, got {show(path[-1])}; quote it")
    if kind == "extra_forbidden":
        key = str(path[-1])
        return Problem(path, f"unknown key{suggest(key, field_names_at(model, path[:-1]), 'keys')}")
    if kind == "missing":
        return Problem(path, "required key is missing")
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return Problem(path, f"must be a mapping, got {show(value)}")
    if kind == "list_type":
        return Problem(path, f"must be a list, got {show(value)}")
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        hint = suggest(value, choices, "values") if isinstance(value, str) else ""
        hint = hint if "did you mean" in hint else ""
        return Problem(path, f"must be one of {', '.join(choices)}, got {show(value)}{hint}")
    sentence = _SENTENCES.get(kind)
    if sentence is not None:
        return Problem(path, f"{sentence(ctx)}, got {show(value)}")
    message = str(error["msg"]).removeprefix("Value error, ")
    if message.startswith("Input should be "):
        message = "must be " + message.removeprefix("Input should be ")
    return Problem(path, f"{message}, got {show(value)}")


def field_names_at(model: type[BaseModel], path: KeyPath) -> list[str]:
    """The keys the model allows at `path`, for did-you-mean suggestions."""
    tp: Any = model
    for part in (*path, None):
        tp = unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if part is None:
                return list(tp.model_fields)
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
        elif get_origin(tp) in (dict, list):
            tp = get_args(tp)[-1]
        else:
            return []
    return []


def unwrap(tp: Any) -> Any:
    """`X | None` and `Annotated[X, ...]` as X, to walk the model's shape."""
    while True:
        if hasattr(tp, "__metadata__"):  # Annotated
            tp = tp.__origin__
        elif get_origin(tp) in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def suggest(word: str, known: list[str], what: str) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known {what}: {', '.join(known)})" if known else ""


def show(value: object) -> str:
    """A value as the user wrote it, short: 5 for 5.0, "a mapping" for a whole mapping."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line_of(root: yaml.Node | None, path: KeyPath) -> int | None:
    """Line (1-based) of the deepest node on `path` that exists in the file."""
    if root is None:
        return None
    node: yaml.Node = root
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = next(
                (
                    kv
                    for kv in node.value
                    if isinstance(kv[0], yaml.ScalarNode) and kv[0].value == part
                ),
                None,
            )
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
