"""OpenAI Images: `/images/generations` (JSON) and `/images/edits` (multipart: image or image[],
optional mask, prompt, ...), with each model family's sizes and limits. Answers carry real PNGs
(util.image_for), as b64_json, or as a data: URL for `response_format: "url"` (the sim hosts
nothing)."""

from __future__ import annotations

import base64
import email.policy
import hashlib
import time
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

from .core import Ctx, Reply, Req, json_reply
from .errors import Fail, bad
from .util import estimate_tokens, image_for

if TYPE_CHECKING:
    from .state import ApiKey, SimState

# model prefix -> (sizes it takes, most images per request)
FAMILIES: dict[str, tuple[tuple[str, ...], int]] = {
    "gpt-image-": (("auto", "1024x1024", "1536x1024", "1024x1536"), 10),
    "dall-e-3": (("1024x1024", "1792x1024", "1024x1792"), 1),
    "dall-e-2": (("256x256", "512x512", "1024x1024"), 10),
}
RATIOS = {"1536x1024": "3:2", "1024x1536": "2:3", "1792x1024": "16:9", "1024x1792": "9:16"}
IMAGE_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp"}
Files = dict[str, list[tuple[str, bytes]]]


def form(req: Req) -> tuple[dict[str, Any], Files]:
    """A multipart/form-data body as (text fields, files by field name)."""
    ctype = req.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data") or "boundary=" not in ctype:
        raise bad(f"Invalid Content-Type header ({ctype or 'none'}), expected multipart/form-data.")
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + req.body)
    if not message.is_multipart():
        raise bad("Could not parse multipart form.")
    fields: dict[str, Any] = {}
    files: Files = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if not isinstance(name, str):
            raise bad("Could not parse multipart form: a part has no name.")
        if part.get_filename() is not None:
            files.setdefault(name.removesuffix("[]"), []).append((part.get_filename(), data))
        else:
            fields[name] = data.decode("utf-8", "replace")
    if "n" in fields:
        try:
            fields["n"] = int(fields["n"])
        except ValueError:
            raise bad("Invalid type for 'n': expected an integer.", param="n") from None
    return fields, files


def family(key: ApiKey, model: str) -> tuple[tuple[str, ...], int]:
    spec = next((spec for prefix, spec in FAMILIES.items() if model.startswith(prefix)), None)
    if spec is None or not key.knows(model):
        raise Fail(404, f"The model `{model}` does not exist or you do not have access to it.")
    return spec


def generate(state: SimState, key: ApiKey, body: dict[str, Any], files: Files, ctx: Ctx) -> Reply:
    return answer(key, body, ctx, b"")


def edit(state: SimState, key: ApiKey, body: dict[str, Any], files: Files, ctx: Ctx) -> Reply:
    images = files.get("image") or []
    if not images:
        raise bad("Missing required parameter: 'image'.", param="image")
    model = ctx.model = body.get("model") or "dall-e-2"
    if model.startswith("dall-e-3"):
        raise bad("Image edits are not supported with dall-e-3.", param="model")
    if model.startswith("dall-e-2") and len(images) > 1:
        raise bad("dall-e-2 takes exactly one image to edit.", param="image")
    seen = b""
    for name, data in images + files.get("mask", []):
        if not any(data.startswith(magic) for magic in IMAGE_TYPES):
            raise bad(f"Invalid image file {name!r}: must be a png, jpg or webp image.", param="image")
        seen += hashlib.sha256(data).digest()
    return answer(key, body, ctx, seen)


def answer(key: ApiKey, body: dict[str, Any], ctx: Ctx, inputs: bytes) -> Reply:
    model = ctx.model = body.get("model") or "dall-e-2"
    sizes, most = family(key, model)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise bad("Missing required parameter: 'prompt'.", param="prompt")
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= most:
        raise bad(f"Invalid 'n': must be between 1 and {most} for {model}.", param="n")
    size = body.get("size") or sizes[0]
    if size not in sizes:
        raise bad(f"Invalid value: {size!r}. Supported values are: {', '.join(map(repr, sizes))}.", param="size")
    fmt = body.get("response_format") or "b64_json"
    if fmt not in ("b64_json", "url") or (fmt == "url" and model.startswith("gpt-image-")):
        raise bad(f"Invalid value for 'response_format': {fmt!r}.", param="response_format")
    data = []
    for i in range(n):
        seed = f"image of: {prompt[:200]}" + (f" #{i}" if i else "") + (inputs.hex() if inputs else "")
        b64 = base64.b64encode(image_for(seed, RATIOS.get(size, "1:1"))).decode()
        item: dict[str, Any] = {"b64_json": b64} if fmt == "b64_json" else {"url": f"data:image/png;base64,{b64}"}
        if model.startswith("dall-e-3"):
            item["revised_prompt"] = prompt
        data.append(item)
    out: dict[str, Any] = {"created": int(time.time()), "data": data}
    if model.startswith("gpt-image-"):
        tokens = estimate_tokens(prompt)
        out |= {"background": body.get("background") or "opaque", "output_format": "png",
                "quality": body.get("quality") or "medium", "size": size if size != "auto" else "1024x1024",
                "usage": {"input_tokens": tokens, "output_tokens": 1056 * n, "total_tokens": tokens + 1056 * n,
                          "input_tokens_details": {"image_tokens": 0, "text_tokens": tokens}}}
    return json_reply(out)
