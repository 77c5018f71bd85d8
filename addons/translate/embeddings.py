"""Embeddings: OpenAI's `/v1/embeddings` and Gemini's `:embedContent` / `:batchEmbedContents`,
as callers send them and as either upstream takes them.

OpenAI takes a string or a list of strings, `dimensions` and `encoding_format` ("float", or
"base64": the little-endian float32 bytes of each vector); Gemini embeds one content per request
(`outputDimensionality`, `taskType`, `title`) and many in a batch. The Gemini API reports no
token counts, so usage there is estimated from the text (about 4 characters a token).
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Final

from . import canonical as c

__all__ = [
    "EmbeddingRequest",
    "Embeddings",
    "decode_gemini",
    "decode_gemini_answer",
    "decode_openai",
    "decode_openai_answer",
    "encode_gemini",
    "encode_gemini_answer",
    "encode_openai",
    "encode_openai_answer",
    "estimate_tokens",
    "packed",
    "unit",
]

MAX_INPUTS: Final = 2048  # OpenAI's limit per request
GEMINI_BATCH: Final = 100  # Gemini's limit per batchEmbedContents
CHARS_PER_TOKEN: Final = 4
_GEMINI_EXTRAS: Final = ("taskType", "title")


@dataclass(slots=True)
class EmbeddingRequest:
    model: str
    inputs: list[str]
    dimensions: int | None = None
    encoding_format: str = "float"
    extras: list[dict[str, Any]] = field(default_factory=list)  # Gemini's taskType / title, per input
    batch: bool = True  # a Gemini caller used batchEmbedContents (else embedContent: one input)


@dataclass(slots=True)
class Embeddings:
    vectors: list[list[float]]
    input_tokens: int


def _bad(param: str, problem: str) -> c.BadRequest:
    return c.BadRequest(f"{param} {problem}", param)


def _dimensions(value: Any, param: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(param, "must be a positive integer")
    return value


def decode_openai(body: Any) -> EmbeddingRequest:
    if not isinstance(body, dict):
        raise c.BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "must be a non-empty string")
    value = body.get("input")
    inputs = [value] if isinstance(value, str) else value
    if not isinstance(inputs, list) or not inputs or len(inputs) > MAX_INPUTS:
        raise _bad("input", f"must be a string or a list of 1 to {MAX_INPUTS} strings")
    if not all(isinstance(text, str) and text for text in inputs):
        raise _bad("input", "must hold non-empty strings (token arrays are not supported by this gateway)")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise _bad("encoding_format", "must be float or base64")
    return EmbeddingRequest(model, list(inputs), _dimensions(body.get("dimensions"), "dimensions"), fmt)


def _content_text(content: Any, where: str) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise _bad(f"{where}.content", "must be a content with parts")
    texts = [part.get("text") for part in parts if isinstance(part, dict)]
    if len(texts) != len(parts) or not all(isinstance(text, str) for text in texts):
        raise _bad(f"{where}.content.parts", "must be text parts")
    return " ".join(texts)  # type: ignore[arg-type]


def _get(obj: dict[str, Any], key: str) -> Any:
    """camelCase or its snake_case spelling, as the Gemini API accepts both."""
    if key in obj:
        return obj[key]
    return obj.get("".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in key))


def decode_gemini(body: Any, model: str, *, batch: bool) -> EmbeddingRequest:
    """`:embedContent` ({content, outputDimensionality, taskType, title}) or
    `:batchEmbedContents` ({requests: [...]}); one `outputDimensionality` for the whole batch."""
    if not isinstance(body, dict):
        raise c.BadRequest("the request body must be a JSON object")
    if batch:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests or not all(isinstance(r, dict) for r in requests):
            raise _bad("requests", "must be a non-empty list of embed requests")
    else:
        requests = [body]
    inputs, extras, sizes = [], [], set()
    for i, one in enumerate(requests):
        where = f"requests[{i}]" if batch else "body"
        inputs.append(_content_text(one.get("content"), where))
        extras.append({key: value for key in _GEMINI_EXTRAS if (value := _get(one, key)) is not None})
        sizes.add(_dimensions(_get(one, "outputDimensionality"), f"{where}.outputDimensionality"))
    if len(sizes) > 1:
        raise _bad("requests", "must all ask for one outputDimensionality")
    request = EmbeddingRequest(model.removeprefix("models/"), inputs, sizes.pop(), extras=extras, batch=batch)
    return request


def encode_gemini(request: EmbeddingRequest, model: str) -> dict[str, Any]:
    """A batchEmbedContents body (an embedContent one for a Gemini caller's single request)."""
    bodies = []
    for i, text in enumerate(request.inputs):
        one: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
        if request.dimensions is not None:
            one["outputDimensionality"] = request.dimensions
        if i < len(request.extras):
            one.update(request.extras[i])
        bodies.append(one)
    if not request.batch:
        del bodies[0]["model"]
        return bodies[0]
    return {"requests": bodies}


def encode_openai(request: EmbeddingRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": request.inputs, "encoding_format": "float"}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    return body


def estimate_tokens(texts: list[str]) -> int:
    return sum(math.ceil(len(text) / CHARS_PER_TOKEN) for text in texts)


def _floats(values: Any) -> list[float]:
    if not isinstance(values, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise c.BadUpstreamAnswer("an embedding is not a list of numbers")
    return [float(v) for v in values]


def decode_gemini_answer(body: Any, request: EmbeddingRequest) -> Embeddings:
    if isinstance(body, dict) and isinstance(body.get("embeddings"), list):
        vectors = [_floats(e.get("values") if isinstance(e, dict) else None) for e in body["embeddings"]]
    elif isinstance(body, dict) and isinstance(body.get("embedding"), dict):
        vectors = [_floats(body["embedding"].get("values"))]
    else:
        raise c.BadUpstreamAnswer("not a Gemini embedding answer")
    if len(vectors) != len(request.inputs):
        raise c.BadUpstreamAnswer(f"{len(vectors)} embeddings for {len(request.inputs)} inputs")
    return Embeddings(vectors, estimate_tokens(request.inputs))


def _unpacked(value: Any) -> list[float]:
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return _floats(value)


def decode_openai_answer(body: Any, request: EmbeddingRequest) -> Embeddings:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or len(data) != len(request.inputs):
        raise c.BadUpstreamAnswer("not an embeddings list with one entry per input")
    ordered = sorted(data, key=lambda item: item.get("index", 0) if isinstance(item, dict) else 0)
    vectors = [_unpacked(item.get("embedding") if isinstance(item, dict) else None) for item in ordered]
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    tokens = usage.get("prompt_tokens")
    return Embeddings(vectors, tokens if isinstance(tokens, int) else estimate_tokens(request.inputs))


def unit(vector: list[float]) -> list[float]:
    """The vector scaled to length 1: OpenAI's shortened embeddings are, Gemini's are not."""
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else vector


def packed(vector: list[float]) -> str:
    """OpenAI's base64 form: the vector's little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def encode_openai_answer(answer: Embeddings, request: EmbeddingRequest, model: str) -> dict[str, Any]:
    encode = packed if request.encoding_format == "base64" else (lambda vector: vector)
    data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(answer.vectors)]
    usage = {"prompt_tokens": answer.input_tokens, "total_tokens": answer.input_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def encode_gemini_answer(answer: Embeddings, request: EmbeddingRequest) -> dict[str, Any]:
    if not request.batch:
        return {"embedding": {"values": answer.vectors[0]}}
    return {"embeddings": [{"values": vector} for vector in answer.vectors]}
