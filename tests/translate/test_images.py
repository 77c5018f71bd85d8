"""The Images API in pure form: forms read byte for byte, OpenAI sizes and qualities as Google's
image config, one picture's GenerateContentRequest, the caller's own request for OpenAI, answers."""

from __future__ import annotations

import base64

import httpx
import pytest
from openai.types import ImagesResponse

from addons.translate import canonical as c
from addons.translate import images

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4 + b"\r\n--not-a-boundary\r\n\n\r"
JPEG = b"\xff\xd8\xff\xe0" + b"\r\n" * 10


def form(data: dict[str, str], files: list[tuple[str, tuple[str, bytes, str]]]) -> tuple[str, bytes]:
    request = httpx.Request("POST", "http://x/", data=data, files=files)
    return request.headers["content-type"], request.read()


def test_a_form_is_read_byte_for_byte():
    ctype, body = form({"prompt": "naïve ☕", "n": "2"}, [("image[]", ("a.png", PNG, "image/png")),
                                                          ("image[]", ("b.jpg", JPEG, "application/octet-stream")),
                                                          ("mask", ("m.png", PNG[::-1], "image/png"))])
    values, files = images.decode_form(ctype, body)
    assert values == {"prompt": "naïve ☕", "n": "2"}
    assert [(f.field, f.filename, f.data) for f in files] == [("image[]", "a.png", PNG), ("image[]", "b.jpg", JPEG),
                                                              ("mask", "m.png", PNG[::-1])]


def test_a_form_with_bare_line_feeds_and_a_quoted_boundary():
    picture = PNG.rstrip(b"\r")  # with bare line feeds a last CR cannot be told from the line break
    body = (b'preamble\n--b:1\nContent-Disposition: form-data; name="prompt"\n\nhi\n'
            b'--b:1\nContent-Disposition: form-data; name="image"; filename="x.png"\nContent-Type: image/png\n\n'
            + picture + b"\n--b:1--\n")
    values, files = images.decode_form('multipart/form-data; boundary="b:1"', body)
    assert values == {"prompt": "hi"} and files[0].data == picture and files[0].content_type == "image/png"


@pytest.mark.parametrize(("ctype", "body", "status"), [
    ("application/json", b"{}", 415),
    ("multipart/form-data", b"--x\r\n", 415),
    ("multipart/form-data; boundary=x", b"nothing here", 400),
    ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nunterminated', 400),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Type: text/plain\r\n\r\nno name\r\n--x--", 400),
])
def test_a_bad_form_is_refused(ctype, body, status):
    with pytest.raises(c.BadRequest) as refused:
        images.decode_form(ctype, body)
    assert refused.value.status == status


def test_an_edit_takes_images_and_a_mask_and_sniffs_their_types():
    ctype, body = form({"prompt": "bluer", "model": "gpt-image-1", "size": "1024x1536"},
                       [("image", ("a", JPEG, "application/octet-stream")), ("mask", ("m.png", PNG, "image/png"))])
    request = images.decode_edit(*images.decode_form(ctype, body))
    assert request.edit and [i.mime_type for i in request.images] == ["image/jpeg"]
    assert base64.b64decode(request.images[0].data) == JPEG and request.mask.mime_type == "image/png"
    body = images.encode_gemini(request, name_modalities=False)
    parts = body["contents"][0]["parts"]
    assert [next(iter(p)) for p in parts] == ["text", "inlineData", "text", "inlineData"]
    assert parts[2]["text"] == images.MASK_NOTE
    assert body["generationConfig"] == {"imageConfig": {"aspectRatio": "2:3"}}  # Cloud Code: no modalities


@pytest.mark.parametrize(("fields", "files", "param"), [
    ({"prompt": "x"}, [("picture", ("a.png", PNG, "image/png"))], "image"),
    ({"prompt": "x"}, [("image", ("notes.txt", b"plain text", "text/plain"))], "image"),
    ({"prompt": ""}, [("image", ("a.png", PNG, "image/png"))], "prompt"),
    ({"prompt": "x", "n": "11"}, [("image", ("a.png", PNG, "image/png"))], "n"),
    ({"prompt": "x"}, [("image", ("a.png", PNG, "image/png")), ("mask", ("m", PNG, "")), ("mask", ("n", PNG, ""))],
     "mask"),
])
def test_a_bad_edit_names_its_field(fields, files, param):
    with pytest.raises(c.BadRequest) as refused:
        images.decode_edit(*images.decode_form(*form(fields, files)))
    assert refused.value.param == param


@pytest.mark.parametrize(("size", "quality", "config"), [
    (None, None, {"aspectRatio": "1:1"}),
    ("auto", "auto", {"aspectRatio": "1:1"}),
    ("1536x1024", "medium", {"aspectRatio": "3:2", "imageSize": "2K"}),
    ("1024x1792", "hd", {"aspectRatio": "9:16", "imageSize": "4K"}),
    ("1792x1024", "standard", {"aspectRatio": "16:9", "imageSize": "1K"}),
    ("2560x1080", "low", {"aspectRatio": "21:9", "imageSize": "1K"}),
    ("4:3", "high", {"aspectRatio": "4:3", "imageSize": "4K"}),
    ("banana", None, {"aspectRatio": "1:1"}),
])
def test_openai_size_and_quality_as_google_image_config(size, quality, config):
    request = images.decode_generation({"prompt": "x", **({"size": size} if size else {}),
                                        **({"quality": quality} if quality else {})})
    assert images.image_config(request) == config


def test_a_generation_for_each_upstream():
    request = images.decode_generation({"prompt": "a kite", "model": "gpt-image-1", "n": 3, "quality": "high"})
    assert request.model == "gpt-image-1" and request.n == 3 and not request.edit
    assert images.encode_gemini(request, name_modalities=True) == {  # a Gemini key is told to draw
        "contents": [{"role": "user", "parts": [{"text": "a kite"}]}],
        "generationConfig": {"imageConfig": {"aspectRatio": "1:1", "imageSize": "4K"}, "responseModalities": ["TEXT", "IMAGE"]},
    }
    assert images.encode_openai(request, "gpt-image-1.5") == {"prompt": "a kite", "model": "gpt-image-1.5", "n": 3,
                                                              "quality": "high"}
    assert images.decode_generation({"prompt": "x"}).model == images.DEFAULT_MODEL
    with pytest.raises(c.BadRequest):
        images.decode_generation({"prompt": "x", "stream": True})


def test_an_edit_for_openai_is_the_callers_own_form_with_the_model_replaced():
    ctype, body = form({"prompt": "bluer", "model": "gpt-image-1", "n": "2"}, [("image[]", ("a.png", PNG, "image/png"))])
    request = images.decode_edit(*images.decode_form(ctype, body))
    values, files = images.encode_openai(request, "gpt-image-2")  # type: ignore[misc]
    content, content_type = images.encode_form(values, files, boundary="sy-1")
    assert content_type == "multipart/form-data; boundary=sy-1"
    again_values, again_files = images.decode_form(content_type, content)
    assert again_values == {"prompt": "bluer", "model": "gpt-image-2", "n": "2"} and again_files[0].data == PNG


def test_the_answer_validates_against_the_sdk():
    pictures = [c.Image("image/png", data=base64.b64encode(PNG).decode())] * 2
    request = images.decode_generation({"prompt": "x"})
    body = images.encode_response(pictures, request, 1700000000, c.Usage(10, 2580))
    answer = ImagesResponse.model_validate(body)
    assert [base64.b64decode(d.b64_json) for d in answer.data] == [PNG, PNG]
    assert answer.output_format == "png" and answer.usage.output_tokens == 2580 and answer.usage.total_tokens == 2590
    request.response_format = "url"
    url = ImagesResponse.model_validate(images.encode_response(pictures[:1], request, 1)).data[0].url
    assert url == "data:image/png;base64," + pictures[0].data
