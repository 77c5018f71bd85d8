"""Small pure helpers every upstream of the sim shares: JSON, token estimates, base64, time."""

from __future__ import annotations

import base64
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

JSON = Any
THINKING_TEXT = "thinking about it"
BYPASS_SIGNATURE = "skip_thought_signature_validator"
IMAGE_TOKENS = 258
CALL_RE = re.compile(r"\[\[call\s+([^\s\]{]+)\s*(\{.*\})?\s*\]\]", re.S)
SNAKE_RE = re.compile(r"_([a-z0-9])")


def dumps(obj: JSON) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def estimate_tokens(text: str | int) -> int:
    """The sim's deterministic token count: ceil(chars / 4) + 1 (text or a char count)."""
    n = text if isinstance(text, int) else len(text)
    return math.ceil(n / 4) + 1


def split_text(text: str, n: int) -> list[str]:
    """`text` in at most n non-empty, nearly equal pieces (a stream's chunks)."""
    n = max(1, min(n, len(text)))
    size = math.ceil(len(text) / n) if text else 1
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def b64_bytes(data: Any) -> bytes | None:
    """Standard or URL-safe base64 (padding optional) decoded, None when invalid."""
    if not isinstance(data, str):
        return None
    if "=" not in data:
        data += "=" * (-len(data) % 4)
    try:
        alt = b"-_" if ("-" in data or "_" in data) else None
        return base64.b64decode(data, altchars=alt, validate=True)
    except ValueError:
        return None


def b64_size(data: Any) -> int | None:
    """Decoded size of standard or URL-safe base64 (padding optional), None when invalid."""
    decoded = b64_bytes(data)
    return None if decoded is None else len(decoded)


def signature_key(sig: str) -> bytes | str:
    """What identifies a signature: its bytes. Gemini's are protobuf bytes, so the SDKs may send
    them back in either base64 alphabet (google-genai re-encodes them URL-safe)."""
    decoded = b64_bytes(sig)
    return sig if decoded is None else decoded


def camel(key: str) -> str:
    return SNAKE_RE.sub(lambda m: m[1].upper(), key) if "_" in key else key


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(s: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(s).replace("Z", "+00:00"))
    except ValueError:
        return None


def duration(seconds: float) -> str:
    """Google's quotaResetDelay style: 2h1m1s."""
    s = max(0, int(seconds))
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return (f"{h}h" if h else "") + (f"{m}m" if h or m else "") + f"{s}s"


def thinking_model(model: str) -> bool:
    return model.startswith(("gemini-2.5", "gemini-3", "gemini-pro-agent")) or "thinking" in model


def validates_signatures(model: str) -> bool:
    """Gemini 3 models (and the agent alias of 3.1 Pro) check the signatures of function calls."""
    return model.startswith(("gemini-3", "gemini-pro-agent")) or "thinking" in model


def mask(key: str) -> str:
    return key[:8] + "…"
