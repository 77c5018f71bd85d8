"""OpenAI's Images API (`/v1/images/generations`, `/v1/images/edits`) and what Google's image
models take for the same work.

The caller speaks OpenAI: a JSON body for generations, a multipart form (one or more images, an
optional mask, the prompt) for edits. Google's image models (gemini-*-image) draw from an
ordinary GenerateContentRequest: the prompt and the images to edit as one user turn, the shape
in `generationConfig.imageConfig` (an aspect ratio, and a size of 1K, 2K or 4K) read from
OpenAI's `size` and `quality`; a Gemini key also wants the image output modality named. They
draw one picture per request, so `n` pictures are `n` requests. An OpenAI upstream gets the
caller's own request with the model replaced.
"""

from __future__ import annotations

import base64
import math
import re
import uuid
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Final

from . import canonical as c

__all__ = [
    "FormFile",
    "ImageRequest",
    "decode_edit",
    "decode_form",
    "decode_generation",
    "encode_form",
    "encode_gemini",
    "encode_openai",
    "encode_response",
    "image_config",
    "sniff",
]

DEFAULT_MODEL: Final = "dall-e-2"  # OpenAI's own default when a request names none
MAX_IMAGES: Final = 10
RESPONSE_FORMATS: Final = ("b64_json", "url")
# Google's aspect ratios as width / height, for OpenAI sizes like "1536x1024".
ASPECT_RATIOS: Final[dict[str, float]] = {
    ratio: int(ratio.split(":")[0]) / int(ratio.split(":")[1])
    for ratio in ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
}
# OpenAI quality -> Google imageSize ("auto" and unknown ones: the model's default).
IMAGE_SIZES: Final[dict[str, str]] = {
    "low": "1K", "standard": "1K", "1k": "1K", "medium": "2K", "2k": "2K", "high": "4K", "hd": "4K", "4k": "4K",
}
_MAGIC: Final = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"))
_EXTENSIONS: Final = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp", "image/gif": "gif"}
MASK_NOTE: Final = "The last image is a mask: change the picture only where the mask is transparent."
_FORM_FIELDS: Final = ("model", "prompt", "n", "size", "quality", "response_format", "background", "output_format",
                       "output_compression", "input_fidelity", "moderation", "style", "user")


@dataclass(frozen=True, slots=True)
class FormFile:
    """One file of a multipart form."""

    field: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None


@dataclass(slots=True)
class ImageRequest:
    model: str
    prompt: str
    n: int = 1
    size: str | None = None
    quality: str | None = None
    response_format: str = "b64_json"
    images: list[c.Image] = field(default_factory=list)  # the pictures to edit
    mask: c.Image | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # the caller's own fields, for an OpenAI upstream
    files: list[FormFile] = field(default_factory=list)  # the caller's own files (edits)

    @property
    def edit(self) -> bool:
        return bool(self.images)


def _bad(param: str, problem: str) -> c.BadRequest:
    return c.BadRequest(f"{param} {problem}", param)


def _common(values: dict[str, Any], model: Any) -> ImageRequest:
    prompt = values.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _bad("prompt", "must be a non-empty string")
    if model is not None and (not isinstance(model, str) or not model):
        raise _bad("model", "must be a non-empty string")
    n = values.get("n", 1)
    if isinstance(n, str) and n.strip().isdigit():
        n = int(n)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
        raise _bad("n", f"must be an integer from 1 to {MAX_IMAGES}")
    fmt = values.get("response_format") or "b64_json"
    if fmt not in RESPONSE_FORMATS:
        raise _bad("response_format", "must be b64_json or url")
    for key in ("size", "quality"):
        if values.get(key) is not None and not isinstance(values[key], str):
            raise _bad(key, "must be a string")
    return ImageRequest(model or DEFAULT_MODEL, prompt, n, values.get("size"), values.get("quality"), fmt)


def decode_generation(body: Any) -> ImageRequest:
    if not isinstance(body, dict):
        raise c.BadRequest("the request body must be a JSON object")
    if body.get("stream"):
        raise _bad("stream", "is not supported by this gateway: ask for the whole image")
    request = _common(body, body.get("model"))
    request.fields = dict(body)
    return request


def sniff(data: bytes, declared: str | None = None) -> str | None:
    """An image's type from its first bytes (a form's declared type may be missing or generic)."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return declared if declared and declared.startswith("image/") else None


def _image(file: FormFile) -> c.Image:
    mime = sniff(file.data, file.content_type)
    if mime is None:
        raise _bad(file.field, f"must be a PNG, JPEG, WEBP or GIF image (got {file.filename or 'an unknown file'})")
    return c.Image(mime, data=base64.b64encode(file.data).decode())


def decode_edit(values: dict[str, str], files: list[FormFile]) -> ImageRequest:
    """A multipart edit: text fields, and files under `image` (or `image[]`) and `mask`."""
    request = _common(values, values.get("model"))
    images = [file for file in files if file.field in ("image", "image[]")]
    masks = [file for file in files if file.field == "mask"]
    if not images:
        raise _bad("image", "is required: the picture (or pictures) to edit")
    if len(masks) > 1:
        raise _bad("mask", "must be one image")
    request.images = [_image(file) for file in images]
    request.mask = _image(masks[0]) if masks else None
    request.fields, request.files = dict(values), list(files)
    return request


_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")


def decode_form(content_type: str, body: bytes) -> tuple[dict[str, str], list[FormFile]]:
    """A multipart/form-data body as (text fields, files), byte for byte. (mitmproxy's own
    `multipart_form` splits parts into lines and joins them without their line breaks, which
    breaks every binary file: a PNG's signature holds a CRLF.)"""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        raise c.BadRequest("the body must be multipart/form-data with a boundary", status=415)
    delimiter = b"--" + boundary.encode("latin-1")
    pos = body.find(delimiter)
    if pos < 0:
        raise c.BadRequest("the multipart body holds no part")
    values: dict[str, str] = {}
    files: list[FormFile] = []
    pos += len(delimiter)
    while not body.startswith(b"--", pos):
        line_end = body.find(b"\n", pos)
        head = _HEAD_END.search(body, line_end) if line_end >= 0 else None
        end = body.find(b"\n" + delimiter, head.end()) if head else -1
        if head is None or end < 0:
            raise c.BadRequest("the multipart body ends inside a part")
        content = body[head.end():end]
        _part(body[line_end + 1:head.start()], content.removesuffix(b"\r"), values, files)
        pos = end + 1 + len(delimiter)
    return values, files


def _part(head: bytes, content: bytes, values: dict[str, str], files: list[FormFile]) -> None:
    part = Message()
    for line in head.decode("utf-8", "replace").splitlines():
        name, colon, value = line.partition(":")
        if colon:
            part[name.strip()] = value.strip()
    name = part.get_param("name", header="content-disposition")
    if not isinstance(name, str) or not name:
        raise c.BadRequest("a multipart part has no name")
    filename = part.get_filename()
    if filename is None:
        values[name] = content.decode("utf-8", "replace")
    else:
        declared = part.get_content_type() if part["content-type"] else None
        files.append(FormFile(name, content, filename, declared))


def _aspect_ratio(size: str | None) -> str:
    """The Google aspect ratio nearest an OpenAI size ("1536x1024" -> 3:2); 1:1 for auto."""
    if size in ASPECT_RATIOS:
        return size  # type: ignore[return-value]
    width, _, height = (size or "").lower().partition("x")
    try:
        ratio = float(width) / float(height)
    except (ValueError, ZeroDivisionError):
        return "1:1"
    return min(ASPECT_RATIOS, key=lambda name: abs(math.log(ASPECT_RATIOS[name] / ratio)))


def image_config(request: ImageRequest) -> dict[str, str]:
    config = {"aspectRatio": _aspect_ratio(request.size)}
    if (size := IMAGE_SIZES.get((request.quality or "").lower())) is not None:
        config["imageSize"] = size
    return config


def _inline(image: c.Image) -> dict[str, Any]:
    return {"inlineData": {"mimeType": image.mime_type, "data": image.data}}


def encode_gemini(request: ImageRequest, *, name_modalities: bool) -> dict[str, Any]:
    """One picture's GenerateContentRequest. Cloud Code takes no responseModalities (its image
    requests say `image_gen` in the envelope); the Gemini API is told to answer with an image."""
    parts: list[dict[str, Any]] = [{"text": request.prompt}, *(_inline(image) for image in request.images)]
    if request.mask is not None:
        parts += [{"text": MASK_NOTE}, _inline(request.mask)]
    config: dict[str, Any] = {"imageConfig": image_config(request)}
    if name_modalities:
        config["responseModalities"] = ["TEXT", "IMAGE"]
    return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}


def encode_openai(request: ImageRequest, model: str) -> dict[str, Any] | tuple[dict[str, str], list[FormFile]]:
    """The caller's own request for an OpenAI upstream: the JSON body, or an edit's form fields
    and files, with the model replaced."""
    if not request.edit:
        return {**request.fields, "model": model}
    values = {key: str(value) for key, value in request.fields.items() if key in _FORM_FIELDS}
    return {**values, "model": model}, request.files


def encode_form(values: dict[str, str], files: list[FormFile], boundary: str | None = None) -> tuple[bytes, str]:
    """multipart/form-data bytes and their content type."""
    boundary = boundary or f"switchyard-{uuid.uuid4().hex}"
    out = bytearray()
    for name, value in values.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    for file in files:
        mime = sniff(file.data, file.content_type) or file.content_type or "application/octet-stream"
        filename = file.filename or f"{file.field.removesuffix('[]')}.{_EXTENSIONS.get(mime, 'bin')}"
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(file.field)}"; '
                f'filename="{_quoted(filename)}"\r\nContent-Type: {mime}\r\n\r\n').encode()
        out += file.data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")


def encode_response(
    images: list[c.Image], request: ImageRequest, created: int, usage: c.Usage | None = None
) -> dict[str, Any]:
    """OpenAI's ImagesResponse. A `url` is asked for by old clients; the gateway hosts nothing,
    so it is a data: URL of the picture."""
    data = []
    for image in images:
        if request.response_format == "url":
            data.append({"url": f"data:{image.mime_type};base64,{image.data}"})
        else:
            data.append({"b64_json": image.data})
    out: dict[str, Any] = {"created": created, "data": data}
    if images and (fmt := _EXTENSIONS.get(images[0].mime_type)) is not None:
        out["output_format"] = fmt
    if usage is not None:
        out["usage"] = {
            "input_tokens": usage.input_tokens,
            "input_tokens_details": {"text_tokens": usage.input_tokens, "image_tokens": 0},
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
        }
    return out
