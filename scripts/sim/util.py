"""Small pure helpers every upstream of the sim shares: JSON, token estimates, base64, time."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import struct
import zlib
from datetime import UTC, datetime
from typing import Any, NamedTuple

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


# --------------------------------------------------------------------------- search, images, embeddings

SEARCH_RE = re.compile(r"\[\[search\s+([^\]]+?)\s*\]\]")
SEARCH_SITES = (("docs.example.com", "Example Docs"), ("wiki.example.org", "Example Wiki"),
                ("news.example.net", "Example News"))
GROUNDING_REDIRECT = "https://vertexaisearch.cloud.google.com/grounding-api-redirect/"


class Hit(NamedTuple):
    """One search result: the page, and the opaque redirect link Google grounding gives for it."""

    url: str
    title: str
    domain: str
    redirect: str


def search_hits(query: str) -> list[Hit]:
    """What the sim's web 'finds' for a query: the same three pages for the same query."""
    slug = re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-") or "search"
    hits = []
    for domain, site in SEARCH_SITES:
        url = f"https://{domain}/{slug}"
        token = base64.urlsafe_b64encode(hashlib.sha256(url.encode()).digest()).decode().rstrip("=")
        hits.append(Hit(url, f"{query} - {site}", domain, GROUNDING_REDIRECT + token))
    return hits


def search_answer(query: str) -> tuple[str, list[tuple[int, int, list[int]]]]:
    """The text a searching model answers with, and its cited spans: (start, end, hit indexes)
    as character offsets into that text."""
    hits = search_hits(query)
    first = f"{hits[0].domain} explains {query}."
    second = f"{hits[1].domain} and {hits[2].domain} say more about {query}."
    text = f"{first} {second}"
    return text, [(0, len(first), [0]), (len(first) + 1, len(text), [1, 2])]


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG (8-bit RGB) of one colour."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    row = b"\x00" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGE_SIZES = {"1K": 64, "2K": 128, "4K": 256}  # the long side of the sim's (scaled-down) images
IMAGE_OUTPUT_TOKENS = {"1K": 1290, "2K": 1290, "4K": 2000}


def image_for(text: str, aspect: str = "1:1", size: str = "1K") -> bytes:
    """The picture a prompt gets: its colour from the prompt, its shape from the aspect ratio."""
    w, h = (int(x) for x in aspect.split(":"))
    side = IMAGE_SIZES[size]
    width, height = (side, max(1, round(side * h / w))) if w >= h else (max(1, round(side * w / h)), side)
    digest = hashlib.sha256(text.encode()).digest()
    return png(width, height, (digest[0], digest[1], digest[2]))


def embedding(text: str, dimensions: int, *, full: int = 3072, normalize: bool = False) -> list[float]:
    """A deterministic unit vector of `full` values for a text, cut to `dimensions` (Gemini cuts
    without normalising again; OpenAI's `dimensions` normalises the shortened vector)."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    values = [rng.gauss(0.0, 1.0) for _ in range(full)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    values = [v / norm for v in values][:dimensions]
    if normalize:
        short = math.sqrt(sum(v * v for v in values)) or 1.0
        values = [v / short for v in values]
    return [round(v, 8) for v in values]
