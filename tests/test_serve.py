"""End to end beyond text: image generation and edits, web search that really searches, and
embeddings, through the official SDKs -> a real gateway -> the simulated upstream.

Two gateways: one with a Google account (Cloud Code: image models, Google Search grounding, no
embeddings) and one with a key of every kind (a Gemini key: image output, grounding,
embeddings; an OpenAI key: the Images and Embeddings APIs and a search model, passed through; an
Anthropic key: its own web_search tool, passed through).
"""

from __future__ import annotations

import base64
import io
import json
import math
import sqlite3
import struct
import zlib

import anthropic
import httpx
import openai
import pytest

from conftest import prepare_gateway
from sim.util import search_answer, search_hits

QUERY = "switchyard gateway"
SEARCH_PROMPT = f"what is new? [[search {QUERY}]]"
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """A decodable PNG's width and height (its pixels inflate to the size its header says)."""
    assert data.startswith(PNG_SIGNATURE), data[:16]
    width, height = struct.unpack(">II", data[16:24])
    idat = data.index(b"IDAT")
    (size,) = struct.unpack(">I", data[idat - 4:idat])
    assert len(zlib.decompress(data[idat + 4:idat + 4 + size])) == height * (1 + 3 * width)
    return width, height


@pytest.fixture(scope="module")
def google(sim, tmp_path_factory):
    gateway = prepare_gateway(sim, tmp_path_factory.mktemp("serve-google"))
    gateway.email = gateway.add_google() and gateway.accounts()[0]["email"]
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def keys(sim, tmp_path_factory):
    gateway = prepare_gateway(sim, tmp_path_factory.mktemp("serve-keys"))
    gateway.add_key("gemini")
    gateway.add_key("openai", "--models", "gpt-*,dall-e-*,text-embedding-*")
    gateway.add_key("anthropic")
    gateway.start()
    yield gateway
    gateway.stop()


def cloud_code_calls(sim, gateway) -> list[dict]:
    return [e for e in sim.log("google") if e["account"] == gateway.email and e["model"]]


# --- images ----------------------------------------------------------------------------------------------


def test_images_generate_on_a_google_account(google, sim):
    before = len(cloud_code_calls(sim, google))
    raw = google.openai().images.with_raw_response.generate(model="gpt-image-1", prompt="a red kite", size="1536x1024",
                                                            quality="medium", n=2)
    result = raw.parse()
    pictures = [base64.b64decode(item.b64_json) for item in result.data]
    assert [png_size(p) for p in pictures] == [(128, 85), (128, 85)]  # 3:2, 2K (the sim draws small)
    assert raw.headers["x-switchyard-model"] == "gemini-3.1-flash-image"  # gpt-image-1 -> the image family
    calls = cloud_code_calls(sim, google)[before:]
    assert [(c["model"], c["request_type"], c["status"]) for c in calls] == [("gemini-3.1-flash-image", "image_gen", 200)] * 2
    assert result.usage is not None and result.usage.output_tokens >= 2 * 1290


def test_images_as_data_urls_for_old_clients(google):
    result = google.openai().images.generate(model="dall-e-3", prompt="a boat", response_format="url")
    header, _, data = result.data[0].url.partition(",")
    assert header == "data:image/png;base64" and png_size(base64.b64decode(data)) == (64, 64)


def test_images_edit_with_a_mask_on_a_google_account(google, sim):
    client = google.openai()
    original = base64.b64decode(client.images.generate(model="gpt-image-1", prompt="a cat").data[0].b64_json)
    edited = client.images.edit(model="gpt-image-1", prompt="a cat", image=("cat.png", original, "image/png"),
                                mask=("mask.png", original, "image/png"))
    picture = base64.b64decode(edited.data[0].b64_json)
    assert png_size(picture) == (64, 64) and picture != original  # the sim drew from the images it got
    several = client.images.edit(model="gpt-image-1", prompt="two cats",
                                 image=[io.BytesIO(original), ("b.png", original, "image/png")])
    assert png_size(base64.b64decode(several.data[0].b64_json)) == (64, 64)


def test_images_refused_in_openai_s_error_shape(google):
    with pytest.raises(openai.BadRequestError) as refused:
        google.openai().images.generate(model="gpt-image-1", prompt="  ")
    assert "prompt" in str(refused.value)
    bad = httpx.post(f"{google.url}/v1/images/edits", headers={**google.auth(), "content-type": "multipart/form-data"},
                     content=b"no boundary")
    assert bad.status_code in (400, 415) and bad.json()["error"]["message"]


def test_images_on_keys_gemini_output_modality_and_openai_pass_through(keys, sim):
    client = keys.openai()
    drawn = client.images.with_raw_response.generate(model="gemini-2.5-flash-image", prompt="a fox", size="1024x1536")
    assert drawn.headers["x-switchyard-model"] == "gemini-2.5-flash-image"
    assert png_size(base64.b64decode(drawn.parse().data[0].b64_json)) == (43, 64)  # 2:3
    native = client.images.with_raw_response.generate(model="gpt-image-1", prompt="a fox", size="1536x1024", n=2)
    assert native.headers["x-switchyard-model"] == "gpt-image-1"
    assert len(native.parse().data) == 2 and native.parse().size == "1536x1024"  # OpenAI's own answer
    original = base64.b64decode(native.parse().data[0].b64_json)
    edited = client.images.edit(model="gpt-image-1", prompt="a fox", image=[("a.png", original, "image/png")])
    assert base64.b64decode(edited.data[0].b64_json) != original and sim.log("openai")[-1]["status"] == 200


# --- web search -----------------------------------------------------------------------------------------


def assert_searched(message, redirects: bool) -> None:
    """Anthropic's search shape: server_tool_use, its results, then text cited from them."""
    kinds = [block.type for block in message.content]
    assert kinds[:2] == ["server_tool_use", "web_search_tool_result"], kinds
    use, results = message.content[:2]
    assert use.name == "web_search" and use.input == {"query": QUERY} and results.tool_use_id == use.id
    hits = search_hits(QUERY)
    assert [r.url for r in results.content] == [h.redirect if redirects else h.url for h in hits]
    texts = message.content[2:]
    assert {block.type for block in texts} == {"text"}
    assert "".join(block.text for block in texts) == search_answer(QUERY)[0]
    cited = [block for block in texts if block.citations]
    assert [len(block.citations) for block in cited] == [1, 2]
    assert cited[0].text == search_answer(QUERY)[0].split(". ")[0] + "."
    assert cited[0].citations[0].type == "web_search_result_location" and cited[0].citations[0].url == results.content[0].url
    assert message.usage.server_tool_use is not None and message.usage.server_tool_use.web_search_requests == 1


@pytest.mark.parametrize("model", ["gemini-3-flash", "claude-sonnet-4-6"])
def test_anthropic_web_search_on_a_google_account_whole_and_streamed(google, sim, model):
    client = google.anthropic()
    ask = {"model": model, "max_tokens": 500, "tools": [WEB_SEARCH], "tool_choice": {"type": "tool", "name": "web_search"},
           "messages": [{"role": "user", "content": SEARCH_PROMPT}]}
    before = len(cloud_code_calls(sim, google))
    assert_searched(client.messages.create(**ask), redirects=True)
    with client.messages.stream(**ask) as stream:
        events = [event.type for event in stream]
        message = stream.get_final_message()
    assert_searched(message, redirects=True)
    assert "citation" in events  # the SDK's own event for a citations_delta
    calls = cloud_code_calls(sim, google)[before:]
    # Claude behind Cloud Code does not ground in Google Search: a Gemini Flash searches for it
    assert [(c["model"], c["request_type"]) for c in calls] == [("gemini-3-flash", "web_search")] * 2


def test_anthropic_web_search_passes_through_to_an_anthropic_key(keys):
    ask = {"model": "claude-sonnet-4-5", "max_tokens": 500, "tools": [WEB_SEARCH],
           "messages": [{"role": "user", "content": SEARCH_PROMPT}]}
    assert_searched(keys.anthropic().messages.create(**ask), redirects=False)
    with keys.anthropic().messages.stream(**ask) as stream:
        assert_searched(stream.get_final_message(), redirects=False)


def assert_annotated(response, redirects: bool, streamed: bool = False) -> None:
    """Whole, the search comes first, as OpenAI orders it; streamed, it follows the message it
    grounds, as Google reports its search only when the answer ends."""
    kinds = [item.type for item in response.output]
    assert kinds == (["message", "web_search_call"] if streamed else ["web_search_call", "message"]), kinds
    search, message = response.output[::-1] if streamed else response.output
    assert search.status == "completed" and search.action.query == QUERY
    hits = search_hits(QUERY)
    assert [s.url for s in search.action.sources] == [h.redirect if redirects else h.url for h in hits]
    text = message.content[0]
    assert text.text == search_answer(QUERY)[0] == response.output_text
    spans = [(a.start_index, a.end_index, a.url) for a in text.annotations]
    assert [text.text[s:e] for s, e, _ in spans][:1] == [search_answer(QUERY)[0].split(". ")[0] + "."]
    assert [url for _, _, url in spans] == [h.redirect if redirects else h.url for h in hits]
    assert all(a.type == "url_citation" and a.title for a in text.annotations)


def test_responses_web_search_whole_and_streamed(google):
    client = google.openai()
    ask = {"model": "gemini-3-flash", "input": SEARCH_PROMPT, "tools": [{"type": "web_search"}]}
    assert_annotated(client.responses.create(**ask), redirects=True)
    with client.responses.stream(**ask) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert_annotated(final, redirects=True, streamed=True)
    assert "response.output_text.annotation.added" in kinds and "response.web_search_call.completed" in kinds


def test_responses_web_search_on_an_anthropic_key(keys):
    """Anthropic runs the search; its blocks and citations become OpenAI's items and annotations."""
    client = keys.openai()
    ask = {"model": "claude-sonnet-4-5", "input": SEARCH_PROMPT, "tools": [{"type": "web_search"}]}
    assert_annotated(client.responses.create(**ask), redirects=False)
    with client.responses.stream(**ask) as stream:
        assert_annotated(stream.get_final_response(), redirects=False, streamed=True)


def test_chat_completions_web_search_options_and_online_models(google, keys):
    for client, model in ((google.openai(), "gemini-3-flash"), (google.openai(), "gemini-3-flash-online"),
                          (keys.openai(), "gpt-4o-search-preview")):
        extra = {} if model.endswith("-online") else {"web_search_options": {}}
        messages = [{"role": "user", "content": SEARCH_PROMPT}]
        message = client.chat.completions.create(model=model, messages=messages, **extra).choices[0].message
        assert message.content == search_answer(QUERY)[0], model
        first = message.annotations[0].url_citation
        assert message.content[first.start_index:first.end_index] == search_answer(QUERY)[0].split(". ")[0] + "."
        with client.chat.completions.stream(model=model, messages=messages, **extra) as stream:
            streamed = stream.get_final_completion().choices[0].message
        assert streamed.content == message.content and streamed.annotations == message.annotations, model


def test_gemini_callers_get_grounding_metadata_as_it_is(google):
    from google.genai import types

    client = google.genai()  # held: the SDK closes its connection when the client goes
    answer = client.models.generate_content(
        model="gemini-3-flash", contents=SEARCH_PROMPT,
        config=types.GenerateContentConfig(tools=[types.Tool(google_search=types.GoogleSearch())]))
    meta = answer.candidates[0].grounding_metadata
    assert meta.web_search_queries == [QUERY]
    assert [chunk.web.uri for chunk in meta.grounding_chunks] == [h.redirect for h in search_hits(QUERY)]
    assert meta.grounding_supports[1].segment.start_index == len(search_answer(QUERY)[0].split(". ")[0]) + 2


def test_function_tools_win_over_search_on_google(google, sim):
    weather = {"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {
        "city": {"type": "string"}}}}
    message = google.anthropic().messages.create(
        model="gemini-3-flash", max_tokens=300, tools=[weather, WEB_SEARCH],
        messages=[{"role": "user", "content": SEARCH_PROMPT}])
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text.startswith("echo: ")  # no search: Google takes no search beside functions
    assert cloud_code_calls(sim, google)[-1]["request_type"] == "agent"


# --- an image model in a chat -------------------------------------------------------------------------------


def test_an_image_model_in_a_chat_answers_in_each_protocol_s_form(google):
    chat = google.openai().chat.completions.create(model="gemini-3.1-flash-image",
                                                   messages=[{"role": "user", "content": "a lamp"}])
    content = chat.choices[0].message.content
    assert content.startswith("image of: a lamp![image](data:image/png;base64,")
    assert png_size(base64.b64decode(content.split("base64,")[1].rstrip(")"))) == (64, 64)
    response = google.openai().responses.create(model="gemini-3.1-flash-image", input="a lamp")
    drawn = [item for item in response.output if item.type == "image_generation_call"]
    assert len(drawn) == 1 and png_size(base64.b64decode(drawn[0].result)) == (64, 64)
    with google.anthropic().messages.stream(model="gemini-3.1-flash-image", max_tokens=200,
                                            messages=[{"role": "user", "content": "a lamp"}]) as stream:
        blocks = stream.get_final_message().content
    assert [b.type for b in blocks] == ["text", "text"] and blocks[1].text.startswith("![image](data:image/png;base64,")


# --- embeddings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gemini-embedding-001", "text-embedding-3-small"])
def test_embeddings_in_float_and_base64(keys, model):
    client = keys.openai()
    floats = client.embeddings.create(model=model, input=["hello", "world"], dimensions=64, encoding_format="float")
    assert [len(item.embedding) for item in floats.data] == [64, 64]
    assert all(math.isclose(sum(v * v for v in item.embedding), 1.0, rel_tol=1e-3) for item in floats.data)
    raw = client.embeddings.with_raw_response.create(model=model, input="hello", dimensions=64, encoding_format="base64")
    packed = raw.http_response.json()["data"][0]["embedding"]
    assert isinstance(packed, str)
    values = struct.unpack("<64f", base64.b64decode(packed))
    assert all(math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) for a, b in zip(values, floats.data[0].embedding))
    assert raw.headers["x-switchyard-model"] == model and floats.usage.prompt_tokens > 0


def test_embeddings_for_gemini_callers(keys):
    from google.genai import types

    client = keys.genai()
    answer = client.models.embed_content(model="gemini-embedding-001", contents=["one", "two", "three"],
                                               config=types.EmbedContentConfig(output_dimensionality=16))
    assert [len(e.values) for e in answer.embeddings] == [16, 16, 16]


def test_google_accounts_serve_no_embeddings(google):
    with pytest.raises(openai.NotFoundError) as missing:
        google.openai().embeddings.create(model="text-embedding-3-small", input="hi")
    assert "no enabled account serves" in str(missing.value)


# --- lists and the ledger -------------------------------------------------------------------------------


def test_model_lists_show_image_and_embedding_models(google, keys):
    listed = {m["id"]: m["mode"] for m in httpx.get(f"{google.url}/v1/models", headers=google.auth()).json()["data"]}
    assert listed["gemini-3.1-flash-image"] == "image_generation" and listed["gemini-3-flash"] == "chat"
    gemini = httpx.get(f"{keys.url}/v1beta/models", headers={"x-goog-api-key": keys.api_key}).json()["models"]
    methods = {m["name"]: m["supportedGenerationMethods"] for m in gemini}
    assert methods["models/gemini-embedding-001"] == ["embedContent", "batchEmbedContents"]
    assert "generateContent" in methods["models/gemini-2.5-flash-image"]


def test_the_ledger_counts_images_and_embedding_tokens(google, keys):
    google.openai().images.generate(model="gpt-image-1", prompt="for the ledger", n=3)
    keys.openai().embeddings.create(model="gemini-embedding-001", input="for the ledger " * 20)
    google.stop()
    keys.stop()
    try:
        with sqlite3.connect(google.home / "data" / "usage.sqlite3") as db:
            images = db.execute("SELECT images, output_tokens FROM requests WHERE operation = 'images' ORDER BY id DESC").fetchone()
        with sqlite3.connect(keys.home / "data" / "usage.sqlite3") as db:
            tokens = db.execute("SELECT input_tokens FROM requests WHERE operation = 'embeddings' ORDER BY id DESC").fetchone()
        assert images[0] == 3 and images[1] >= 3 * 1290
        assert tokens[0] == math.ceil(len("for the ledger " * 20) / 4)
        totals = json.loads(google.cli("stats", "--json", "--since", "all").stdout)["totals"]
        assert totals["images"] >= 3
    finally:
        google.start()
        keys.start()
