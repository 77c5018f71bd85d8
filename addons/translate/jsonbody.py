"""A caller's JSON body, parsed once, refused with a 400 when no upstream could take it.

`json.loads` accepts more than the translators and upstreams can: NaN, Infinity and numbers
too large for a float (written back as `Infinity`, which is not JSON), escapes of lone UTF-16
surrogates (`"\\ud800"`, which no UTF-8 encoder can write back), and nesting thousands deep
(parsed in C, but beyond Python's recursion limit for any code that walks it). Each would fail
later, far from the caller's mistake; here it is the caller's error, in the caller's protocol.
The translators may rely on what `parse` lets through.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

from . import canonical as c

MAX_DEPTH = 128  # JSON nesting; a tool schema of 60 levels still fits

# An escaped surrogate, paired or not; only bodies that have one pay for the full check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def parse(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or c.BadRequest saying what is wrong with it."""
    try:
        body = json.loads(raw or b"", parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise c.BadRequest(f"request body is nested too deeply (more than {MAX_DEPTH} levels)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise c.BadRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise c.BadRequest("request body must be a JSON object")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and not shallow(body):
        raise c.BadRequest(f"request body is nested too deeply (more than {MAX_DEPTH} levels)")
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise c.BadRequest("request body has a string with an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)") from None
    return body


def shallow(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` nests at most `limit` levels (without recursing itself)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    return False
                stack.append((child, depth + 1))
    return True
