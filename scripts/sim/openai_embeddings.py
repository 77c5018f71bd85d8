"""OpenAI `/embeddings`: string or list input, `dimensions` (text-embedding-3 models only),
`encoding_format` float or base64 (little-endian float32), usage in tokens."""

from __future__ import annotations

import base64
import struct
from typing import TYPE_CHECKING, Any

from .core import Ctx, Reply, json_reply
from .errors import Fail, bad
from .util import embedding, estimate_tokens

if TYPE_CHECKING:
    from .state import ApiKey, SimState

SIZES = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
SHORTENS = ("text-embedding-3-",)  # the models that take `dimensions`
MAX_INPUTS = 2048


def create(state: SimState, key: ApiKey, body: dict[str, Any], files: Any, ctx: Ctx) -> Reply:
    model = ctx.model
    if model is None:
        raise bad("you must provide a model parameter", param="model")
    if not key.knows(model) or model not in SIZES:
        raise Fail(404, f"The model `{model}` does not exist or you do not have access to it.")
    texts = inputs(body.get("input"))
    full = SIZES[model]
    size = body.get("dimensions")
    if size is not None:
        if not model.startswith(SHORTENS):
            raise bad("This model does not support specifying dimensions.", param="dimensions")
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= full:
            raise bad(f"Invalid value for 'dimensions': must be an integer from 1 to {full}.", param="dimensions")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise bad(f"Invalid value for 'encoding_format': {fmt!r}. Supported values are: 'float' and 'base64'.",
                  param="encoding_format")
    data = []
    for i, text in enumerate(texts):
        vector = embedding(text, size or full, full=full, normalize=size is not None)
        value: Any = vector if fmt == "float" else base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(estimate_tokens(t) for t in texts)
    return json_reply({"object": "list", "data": data, "model": model,
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > MAX_INPUTS:
        raise bad("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
                  param="input")
    if not all(isinstance(v, str) and v for v in value):
        raise bad("'$.input' is invalid: every input must be a non-empty string.", param="input")
    return value
