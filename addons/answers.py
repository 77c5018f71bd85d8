"""Responses the gateway makes itself, always in the caller's own protocol."""

from __future__ import annotations

import json
import math
from typing import Any

from mitmproxy import http

from .translate import registry

JSON_HEADERS = {"content-type": "application/json"}


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> http.Response:
    # backslashreplace: a path or header with raw bytes (surrogates here) may be echoed in an error
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(errors="backslashreplace")
    return http.Response.make(status, content, {**JSON_HEADERS, **(headers or {})})


def error(
    protocol: str,
    status: int,
    message: str,
    *,
    kind: str | None = None,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
) -> http.Response:
    caller = registry.CALLERS.get(protocol) or registry.CALLERS["openai_chat"]
    extra = dict(headers or {})
    if retry_after is not None:
        extra["retry-after"] = str(max(math.ceil(retry_after), 1))
    return json_response(status, caller.error_body(status, message, kind), extra)
