"""The simulated upstream beyond text: image models, Google Search grounding, embeddings, OpenAI
images and Anthropic's web search tool, each as strict as the live service and each refusal
next to the request it accepts."""

from __future__ import annotations

import base64
import math
import struct
import zlib
from typing import Any

import httpx
import pytest
from sim_kit import (ANTHROPIC_HEADERS, GOOGLE_KEY, OPENAI_KEY, WEATHER_GEMINI, anthropic_events, bearer, client,
                     envelope, google_error, server, sim, sse_data, user)

from sim.util import GROUNDING_REDIRECT, search_answer, search_hits

__all__ = ["client", "server", "sim"]  # fixtures

IMAGE_MODEL = "gemini-3.1-flash-image"
SEARCH = [{"googleSearch": {}}]
OPENAI = {"authorization": f"Bearer {OPENAI_KEY}"}
GEMINI = {"x-goog-api-key": GOOGLE_KEY}


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking it is one (signature, IHDR, a pixel row that inflates)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat = data.index(b"IDAT")
    (size,) = struct.unpack(">I", data[idat - 4:idat])
    assert len(zlib.decompress(data[idat + 4:idat + 4 + size])) == height * (1 + 3 * width)
    return width, height


def cloudcode(client: httpx.Client, model: str, request: dict[str, Any], request_type: str = "agent",
              stream: bool = False) -> httpx.Response:
    body = envelope(request.pop("contents"), model, **request)
    body["requestType"] = request_type
    method = "streamGenerateContent" if stream else "generateContent"
    return client.post(f"/v1internal:{method}", headers=bearer(client), json=body,
                       params={"alt": "sse"} if stream else {})


# --- images on Cloud Code -------------------------------------------------------------------------


def test_an_image_model_draws_a_png_of_the_asked_shape(client):
    config = {"imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"}}
    r = cloudcode(client, IMAGE_MODEL, {"contents": [user("a lighthouse")], "generationConfig": config}, "image_gen")
    assert r.status_code == 200, r.text
    answer = r.json()["response"]
    parts = answer["candidates"][0]["content"]["parts"]
    assert parts[0] == {"text": "image of: a lighthouse"}
    image = parts[1]["inlineData"]
    assert image["mimeType"] == "image/png"
    assert png_size(base64.b64decode(image["data"])) == (128, 72)
    details = {d["modality"]: d["tokenCount"] for d in answer["usageMetadata"]["candidatesTokensDetails"]}
    assert details["IMAGE"] == 1290


@pytest.mark.parametrize(("request_type", "extra", "message"), [
    ("agent", {}, "requestType 'image_gen'"),
    ("image_gen", {"tools": WEATHER_GEMINI}, "Function calling is not enabled"),
    ("image_gen", {"systemInstruction": {"parts": [{"text": "be nice"}]}}, "Developer instruction is not enabled"),
    ("image_gen", {"generationConfig": {"thinkingConfig": {"thinkingBudget": 1024}}}, "Thinking is not enabled"),
    ("image_gen", {"generationConfig": {"imageConfig": {"aspectRatio": "7:5"}}}, "not a supported aspect ratio"),
    ("image_gen", {"generationConfig": {"imageConfig": {"imageSize": "8K"}}}, "not a supported image size"),
])
def test_an_image_model_refuses_what_cloud_code_refuses(client, request_type, extra, message):
    r = cloudcode(client, IMAGE_MODEL, {"contents": [user("a lighthouse")], **extra}, request_type)
    assert message in google_error(r, 400, "INVALID_ARGUMENT")["message"]


def test_image_gen_is_for_image_models_only(client):
    r = cloudcode(client, "gemini-3-flash", {"contents": [user("hi")]}, "image_gen")
    assert "needs an image model" in google_error(r, 400, "INVALID_ARGUMENT")["message"]
    r = cloudcode(client, "gemini-3-flash", {"contents": [user("hi")]}, "chat")
    assert "is not one of agent" in google_error(r, 400, "INVALID_ARGUMENT")["message"]


# --- Google Search grounding ------------------------------------------------------------------------


def test_a_search_answer_carries_grounding_metadata_with_byte_offsets(client, sim):
    query = "café opening hours"  # not ASCII: offsets are UTF-8 bytes
    r = cloudcode(client, "gemini-3-flash", {"contents": [user(f"look up [[search {query}]]")], "tools": SEARCH},
                  "web_search", stream=True)
    assert r.status_code == 200, r.text
    docs = [d["response"] for d in sse_data(r.text)]
    text = "".join(p.get("text", "") for d in docs for p in d["candidates"][0]["content"]["parts"]
                   if not p.get("thought"))
    assert text == search_answer(query)[0]
    assert all("groundingMetadata" not in d["candidates"][0] for d in docs[:-1])  # with the last event
    meta = docs[-1]["candidates"][0]["groundingMetadata"]
    assert meta["webSearchQueries"] == [query]
    hits = search_hits(query)
    assert [c["web"] for c in meta["groundingChunks"]] == [{"uri": h.redirect, "title": h.domain} for h in hits]
    assert all(c["web"]["uri"].startswith(GROUNDING_REDIRECT) for c in meta["groundingChunks"])
    raw = text.encode()
    first, second = meta["groundingSupports"]
    assert "startIndex" not in first["segment"] and first["groundingChunkIndices"] == [0]
    for support in (first, second):
        segment = support["segment"]
        assert raw[segment.get("startIndex", 0):segment["endIndex"]].decode() == segment["text"]
    assert sim.log("google")[-1]["request_type"] == "web_search"


def test_without_the_marker_or_the_tool_nothing_is_searched(client):
    r = cloudcode(client, "gemini-3-flash", {"contents": [user("just talk")], "tools": SEARCH})
    assert "groundingMetadata" not in r.json()["response"]["candidates"][0]
    r = cloudcode(client, "gemini-3-flash", {"contents": [user("[[search x y]]")]})
    assert r.json()["response"]["candidates"][0]["content"]["parts"][0]["text"].startswith("echo: ")


def test_search_and_function_declarations_do_not_go_together(client):
    r = cloudcode(client, "gemini-3-flash", {"contents": [user("hi")], "tools": SEARCH + WEATHER_GEMINI})
    assert google_error(r, 400, "INVALID_ARGUMENT")["message"] == "Tool use with function calling is unsupported"


def test_only_gemini_models_ground_in_google_search_on_cloud_code(client):
    r = cloudcode(client, "claude-sonnet-4-6", {"contents": [user("hi")], "tools": SEARCH}, "web_search")
    assert "not supported for model claude-sonnet-4-6" in google_error(r, 400, "INVALID_ARGUMENT")["message"]


def test_the_gemini_api_grounds_too(client):
    r = client.post("/v1beta/models/gemini-2.5-flash:generateContent", headers=GEMINI,
                    json={"contents": [user("[[search tides]]")], "tools": [{"google_search": {}}]})
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["groundingMetadata"]["webSearchQueries"] == ["tides"]


# --- the Gemini API: image output, embeddings ------------------------------------------------------------


def test_a_gemini_key_image_model_draws_unless_told_text_only(client):
    url = "/v1beta/models/gemini-2.5-flash-image:generateContent"
    config = {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "3:4"}}
    r = client.post(url, headers=GEMINI, json={"contents": [user("a fox")], "generationConfig": config})
    parts = r.json()["candidates"][0]["content"]["parts"]
    assert png_size(base64.b64decode(parts[1]["inlineData"]["data"])) == (48, 64)
    r = client.post(url, headers=GEMINI, json={"contents": [user("a fox")],
                                               "generationConfig": {"responseModalities": ["TEXT"]}})
    assert [list(p) for p in r.json()["candidates"][0]["content"]["parts"]] == [["text"]]


def test_embed_content_and_batches_give_vectors_of_the_asked_size(client):
    base = "/v1beta/models/gemini-embedding-001"
    one = client.post(f"{base}:embedContent", headers=GEMINI, json={"content": {"parts": [{"text": "hello"}]}})
    full = one.json()["embedding"]["values"]
    assert len(full) == 3072 and math.isclose(sum(v * v for v in full), 1.0, rel_tol=1e-4)
    batch = client.post(f"{base}:batchEmbedContents", headers=GEMINI, json={"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": t}]}, "outputDimensionality": 8}
        for t in ("hello", "world")]})
    short = [e["values"] for e in batch.json()["embeddings"]]
    assert [len(v) for v in short] == [8, 8] and short[0] == full[:8] != short[1]


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("gemini-embedding-001:embedContent", {"content": {"parts": [{"text": "x"}]}, "outputDimensionality": 4000},
     400, "output_dimensionality"),
    ("gemini-embedding-001:batchEmbedContents",
     {"requests": [{"model": "models/other", "content": {"parts": [{"text": "x"}]}}]}, 400, "does not match"),
    ("gemini-embedding-001:embedContent", {"content": {"parts": [{"inlineData": {}}]}}, 400, "only text parts"),
    ("gemini-2.5-flash:embedContent", {"content": {"parts": [{"text": "x"}]}}, 404, "not supported for embedContent"),
    ("gemini-embedding-001:generateContent", {"contents": [user("x")]}, 404, "not supported for generateContent"),
])
def test_embedding_refusals(client, path, body, status, message):
    r = client.post(f"/v1beta/models/{path}", headers=GEMINI, json=body)
    assert message in google_error(r, status, "INVALID_ARGUMENT" if status == 400 else "NOT_FOUND")["message"]


# --- OpenAI: embeddings, images, search models -------------------------------------------------------------


def test_openai_embeddings_in_float_and_base64(client):
    body = {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 16}
    floats = client.post("/v1/embeddings", headers=OPENAI, json=body).json()
    packed = client.post("/v1/embeddings", headers=OPENAI, json={**body, "encoding_format": "base64"}).json()
    for plain, b64 in zip(floats["data"], packed["data"], strict=True):
        assert len(plain["embedding"]) == 16
        assert math.isclose(sum(v * v for v in plain["embedding"]), 1.0, rel_tol=1e-4)  # shortened, normalised
        decoded = struct.unpack("<16f", base64.b64decode(b64["embedding"]))
        assert all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-7) for x, y in zip(decoded, plain["embedding"]))
    assert floats["usage"]["prompt_tokens"] == floats["usage"]["total_tokens"] > 0
    r = client.post("/v1/embeddings", headers=OPENAI, json={**body, "dimensions": 5000})
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions"


def test_openai_images_generate_and_edit(client):
    r = client.post("/v1/images/generations", headers=OPENAI,
                    json={"model": "gpt-image-1", "prompt": "a boat", "size": "1536x1024", "n": 2})
    assert r.status_code == 200, r.text
    made = [base64.b64decode(d["b64_json"]) for d in r.json()["data"]]
    assert [png_size(p) for p in made] == [(64, 43), (64, 43)] and made[0] != made[1]
    assert r.json()["usage"]["output_tokens"] > 0
    edit = client.post("/v1/images/edits", headers=OPENAI, data={"model": "gpt-image-1", "prompt": "a boat"},
                       files=[("image[]", ("boat.png", made[0], "image/png"))])
    assert edit.status_code == 200, edit.text
    assert base64.b64decode(edit.json()["data"][0]["b64_json"]) != made[0]  # the input image counts
    bad = client.post("/v1/images/edits", headers=OPENAI, data={"model": "gpt-image-1", "prompt": "x"},
                      files=[("image", ("notes.txt", b"plain text", "text/plain"))])
    assert bad.status_code == 400 and "png, jpg or webp" in bad.json()["error"]["message"]
    wrong = client.post("/v1/images/generations", headers=OPENAI, json={"model": "dall-e-3", "prompt": "x", "n": 2})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "n"


def test_openai_search_models_cite_with_url_annotations(client):
    body = {"model": "gpt-4o-search-preview", "messages": [user_message("[[search tides]]")], "web_search_options": {}}
    message = client.post("/v1/chat/completions", headers=OPENAI, json=body).json()["choices"][0]["message"]
    first = message["annotations"][0]["url_citation"]
    assert message["content"][first["start_index"]:first["end_index"]] == search_answer("tides")[0].split(". ")[0] + "."
    assert first["url"] == search_hits("tides")[0].url
    r = client.post("/v1/chat/completions", headers=OPENAI, json={**body, "model": "gpt-4o"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "web_search_options"


def user_message(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


# --- Anthropic's web search tool ----------------------------------------------------------------------------------


def test_anthropic_web_search_answers_with_blocks_and_citations(client):
    body = {"model": "claude-sonnet-4-5", "max_tokens": 200, "messages": [user_message("[[search tides]]")],
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]}
    message = client.post("/v1/messages", headers=ANTHROPIC_HEADERS, json=body).json()
    kinds = [b["type"] for b in message["content"]]
    assert kinds[:2] == ["server_tool_use", "web_search_tool_result"] and set(kinds[2:]) == {"text"}
    assert message["content"][0]["input"] == {"query": "tides"}
    assert [r["url"] for r in message["content"][1]["content"]] == [h.url for h in search_hits("tides")]
    assert "".join(b["text"] for b in message["content"][2:]) == search_answer("tides")[0]
    assert message["content"][2]["citations"][0]["type"] == "web_search_result_location"
    assert message["usage"]["server_tool_use"]["web_search_requests"] == 1
    events = anthropic_events(client.post("/v1/messages", headers=ANTHROPIC_HEADERS, json={**body, "stream": True}).text)
    deltas = {e["delta"]["type"] for name, e in events if name == "content_block_delta"}
    assert {"input_json_delta", "citations_delta", "text_delta"} <= deltas
    wrong = client.post("/v1/messages", headers=ANTHROPIC_HEADERS,
                        json={**body, "tools": [{"type": "web_search_20250305", "name": "search"}]})
    assert wrong.status_code == 400 and "Input should be 'web_search'" in wrong.text
