"""Owns reading a request body as JSON text (RFC 8259: UTF-8, finite numbers, nesting
bounded) and writing a run's payload back as the bytes published; must not know what a
run's fields mean (streams.intake.requests checks those).

Refusals raise InvalidRequest: 400 for a body that is not JSON text we read, 422 for a
payload JSON text cannot carry.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from streams.intake.requests import InvalidRequest

#: Deepest nesting of arrays and objects a body may have (the body object is level 1).
#: Far below the interpreter's recursion limit, so nothing after parsing can hit it.
MAX_DEPTH = 64

# Valid JSON only (the body has parsed), so every quote outside a string opens one and
# this matches each string once, left to right: linear, whatever the escapes.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def read_json(body: bytes) -> Any:
    """The body's JSON value. Strict UTF-8 (json.loads alone would take UTF-16 and 32 and
    pass UTF-8-encoded surrogates through), nested at most MAX_DEPTH deep."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            400, "", f"the body is not UTF-8 (byte {exc.start}: {exc.reason}); send UTF-8 JSON"
        ) from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidRequest(400, "", f"the body is nested deeper than {MAX_DEPTH}") from None
    except ValueError as exc:  # JSONDecodeError, or an integer over the digit limit
        raise InvalidRequest(400, "", f"the body is not JSON: {exc}") from None
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise InvalidRequest(400, "", f"the body is nested deeper than {MAX_DEPTH}")
    return value


def payload_bytes(value: Any) -> bytes:
    """`value` as the payload published: compact JSON, ASCII (as before). Raises
    InvalidRequest (422) for what JSON text cannot carry: NaN, infinities (1e999 parses
    as one), and lone surrogates (json.dumps would escape them as \\udXXX, still not
    text any reader can decode)."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise InvalidRequest(
            422, "payload", "has a number JSON cannot carry (NaN, Infinity or out of range)"
        ) from None
    # Every surrogate, paired or lone, is written as a \udXXX escape: only then look closer.
    if "\\ud" in text:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequest(
                422, "payload", f"has a lone surrogate (U+{ord(exc.object[exc.start]):04X})"
                ": not Unicode text",
            ) from None  # fmt: skip
    return text.encode("ascii")


def _depth(text: str) -> int:
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)
