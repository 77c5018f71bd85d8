"""Web search in pure form: each protocol's search tool in, Google's groundingMetadata and the
other upstreams' citations read into the canonical Grounding, and each caller's own shapes out
(Anthropic's search blocks and citations, Gemini's metadata), whole and streamed."""

from __future__ import annotations

import json

import anthropic
import httpx2
import pytest
from anthropic.types import Message

from addons.translate import anthropic as a
from addons.translate import canonical as c
from addons.translate import gemini as g
from addons.translate import openai_chat as oc
from addons.translate import openai_responses as r

TEXT = "Café Zürich opens at 8. It closes at 18."  # non-ASCII: Google counts bytes
FIRST, SECOND = "Café Zürich opens at 8.", "It closes at 18."
META = {
    "webSearchQueries": ["café zürich hours"],
    "groundingChunks": [{"web": {"uri": "https://g.example/1", "title": "a.example"}},
                        {"retrievedContext": {"uri": "gs://doc", "title": "doc"}},
                        {"web": {"uri": "https://g.example/3", "title": "c.example"}}],
    "groundingSupports": [
        {"segment": {"endIndex": len(FIRST.encode()), "text": FIRST}, "groundingChunkIndices": [0]},
        {"segment": {"startIndex": len(FIRST.encode()) + 1, "endIndex": len(TEXT.encode()), "text": SECOND},
         "groundingChunkIndices": [1, 2]},
    ],
}
GROUNDING = c.Grounding(
    queries=["café zürich hours"],
    sources=[c.Source("https://g.example/1", "a.example"), c.Source("gs://doc", "doc"), c.Source("https://g.example/3", "c.example")],
    citations=[c.Citation(0, len(FIRST), FIRST, [0]), c.Citation(len(FIRST) + 1, len(TEXT), SECOND, [1, 2])],
)


def test_google_metadata_is_read_with_byte_offsets_made_character_offsets():
    assert g.grounding_in(META, TEXT) == GROUNDING
    shifted = {**META, "groundingSupports": [{"segment": {"startIndex": 3, "endIndex": 9, "text": SECOND},
                                              "groundingChunkIndices": [2]}]}
    assert g.grounding_in(shifted, TEXT).citations == [c.Citation(len(FIRST) + 1, len(TEXT), SECOND, [2])]  # by its text


def test_metadata_written_back_reads_the_same():
    meta = g.grounding_out(GROUNDING, TEXT)
    assert "startIndex" not in meta["groundingSupports"][0]["segment"]  # zero is left out, as proto3 does
    assert g.grounding_in(meta, TEXT).citations == GROUNDING.citations


def test_the_stream_decoder_reports_the_last_metadata_before_the_text_closes():
    def doc(text: str, meta: dict | None = None, end: bool = False) -> bytes:
        candidate: dict = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
        if meta is not None:
            candidate["groundingMetadata"] = meta
        if end:
            candidate["finishReason"] = "STOP"
        return b"data: " + json.dumps({"response": {"candidates": [candidate]}}).encode() + b"\r\n\r\n"

    decoder = g.antigravity.stream_decoder()
    events = decoder.feed(doc(FIRST, {"webSearchQueries": ["early"]}) + doc(" " + SECOND, META, end=True))
    events += decoder.close()
    assert [type(e).__name__ for e in events] == ["BlockStart", "TextDelta", "TextDelta", "Grounded", "BlockStop", "Finish"]
    assert events[3] == c.Grounded(GROUNDING)


def test_search_tools_in_and_out_of_gemini_bodies():
    request = g.caller.decode_request({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"google_search": {}}]}, model="m")
    assert request.search == c.WebSearch() and request.tools == []
    assert g.encode_request(request, "gemini-3-flash")["tools"] == [{"googleSearch": {}}]
    declared = {"tools": [{"functionDeclarations": [{"name": "f"}]}, {"googleSearch": {}}]}
    assert g.fit_search(declared, True) == {"tools": [{"functionDeclarations": [{"name": "f"}]}]}  # functions win
    assert g.fit_search({"contents": []}, True) == {"contents": [], "tools": [{"googleSearch": {}}]}
    assert g.fit_search({"contents": []}, False) == {"contents": []}


def test_image_models_get_no_tools_system_or_thinking():
    body = {"contents": [], "tools": [{"googleSearch": {}}], "systemInstruction": {"parts": [{"text": "s"}]},
            "generationConfig": {"thinkingConfig": {"thinkingBudget": 1}, "temperature": 1, "responseModalities": ["TEXT"]}}
    assert g.fit_image_model(body, name_modalities=False) == {"contents": [], "generationConfig": {"temperature": 1}}
    assert g.fit_image_model(body, name_modalities=True)["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
    assert [m for m in ("gemini-3.1-flash-image", "imagen-4.0", "gemini-3-flash", "gemini-2.5-flash-image-preview")
            if g.is_image_model(m)] == ["gemini-3.1-flash-image", "imagen-4.0", "gemini-2.5-flash-image-preview"]


# --- Anthropic -----------------------------------------------------------------------------------------


def search_request(**extra) -> c.Request:
    body = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2, "allowed_domains": ["a.example"]}],
            "tool_choice": {"type": "tool", "name": "web_search"}, **extra}
    return a.caller.decode_request(body)


def test_anthropic_web_search_tool_in():
    request = search_request()
    assert request.search == c.WebSearch(max_uses=2, allowed_domains=["a.example"]) and request.tools == []
    assert request.tool_choice is None  # forcing the server tool: searching is the upstream model's call
    own = search_request(tools=[{"name": "web_search", "input_schema": {"type": "object"}}])
    assert own.search is None and own.tool_choice == c.ToolChoice("tool", "web_search")  # a custom tool of that name
    body = a.upstream.encode_request(request, "claude-sonnet-4-5")
    assert body["tools"] == [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2,
                              "allowed_domains": ["a.example"]}]


def grounded_answer() -> c.Response:
    return c.Response("r1", "m", [c.Text(TEXT)], grounding=GROUNDING, usage=c.Usage(5, 9))


def assert_anthropic_search(message: Message) -> None:
    kinds = [block.type for block in message.content]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text", "text", "text"], kinds
    assert message.content[0].input == {"query": "café zürich hours"}
    assert [result.url for result in message.content[1].content] == [s.url for s in GROUNDING.sources]
    first, gap, second = message.content[2:]
    assert (first.text, gap.text, second.text) == (FIRST, " ", SECOND) and gap.citations is None
    assert [cit.url for cit in second.citations] == ["gs://doc", "https://g.example/3"]
    assert first.citations[0].cited_text == FIRST and first.citations[0].encrypted_index
    assert message.usage.server_tool_use.web_search_requests == 1


def sdk_stream(data: bytes) -> Message:
    """The official client's `messages.stream()` over these bytes."""
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, headers={"content-type": "text/event-stream"},
                                                                      content=data))
    client = anthropic.Anthropic(api_key="k", base_url="http://gateway.test", max_retries=0,
                                 http_client=httpx2.Client(transport=transport), _strict_response_validation=True)
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as stream:
        return stream.get_final_message()


def test_anthropic_whole_answer_blocks_and_citations():
    assert_anthropic_search(Message.model_validate(a.caller.encode_response(grounded_answer(), search_request())))


def test_anthropic_stream_holds_the_text_until_its_sources_are_known():
    encoder = a.caller.stream_encoder(search_request(), "r1", "m", 0)
    events: list[c.Event] = [c.BlockStart(0, c.Thinking("")), c.ThinkingDelta(0, "hm"), c.SignatureDelta(0, "s"),
                             c.BlockStop(0), c.BlockStart(1, c.Text("")), c.TextDelta(1, FIRST), c.TextDelta(1, " "),
                             c.TextDelta(1, SECOND), c.Grounded(GROUNDING), c.BlockStop(1), c.Finish("stop", c.Usage(5, 9))]
    chunks = [encoder.encode([event]) for event in events]
    assert b"text_delta" not in b"".join(chunks[:-1])  # held back ...
    assert chunks[-1].count(b"citations_delta") == 3  # ... and cited at the end
    message = sdk_stream(b"".join(chunks))
    assert message.content[0].type == "thinking"
    message.content = message.content[1:]
    assert_anthropic_search(message)


def test_anthropic_upstream_search_blocks_are_read_whole_and_streamed():
    content = [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
            {"type": "web_search_result", "url": "https://a.example", "title": "A", "encrypted_content": "x"}]},
        {"type": "text", "text": "Intro. "},
        {"type": "text", "text": "A says so.", "citations": [
            {"type": "web_search_result_location", "url": "https://a.example", "title": "A", "cited_text": "so",
             "encrypted_index": "y"}]},
    ]
    expected = c.Grounding(["q"], [c.Source("https://a.example", "A")], [c.Citation(7, 17, "so", [0])])
    whole = a.upstream.decode_response({"type": "message", "id": "m", "model": "x", "content": content,
                                        "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}})
    assert whole.grounding == expected and c.answer_text(whole.parts) == "Intro. A says so."
    streamed = a.caller.stream_encoder(c.Request("m", [], search=c.WebSearch()), "r", "m", 0)
    stream = streamed.encode([c.BlockStart(0, c.Text("")), c.TextDelta(0, "Intro. A says so."), c.Grounded(expected),
                              c.BlockStop(0), c.Finish("stop", c.Usage())])
    decoder = a.upstream.stream_decoder()
    events = decoder.feed(stream) + decoder.close()
    grounded = [e for e in events if isinstance(e, c.Grounded)]
    assert grounded == [c.Grounded(c.Grounding(["q"], [c.Source("https://a.example", "A")],
                                               [c.Citation(7, 17, "so", [0])]))]


# --- OpenAI ---------------------------------------------------------------------------------------------


def test_chat_search_options_and_annotations_both_ways():
    request = oc.caller.decode_request({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                        "web_search_options": {"search_context_size": "low"}})
    assert request.search == c.WebSearch()
    assert oc.upstream.encode_request(request, "gpt-4o-search-preview")["web_search_options"] == {}
    assert "web_search_options" not in oc.upstream.encode_request(request, "gpt-4.1")  # only search models take it
    body = oc.caller.encode_response(grounded_answer(), request)
    annotations = body["choices"][0]["message"]["annotations"]
    assert [(x["url_citation"]["start_index"], x["url_citation"]["url"]) for x in annotations] == [
        (0, "https://g.example/1"), (len(FIRST) + 1, "gs://doc"), (len(FIRST) + 1, "https://g.example/3")]
    back = oc.upstream.decode_response(body)
    assert back.grounding.sources == GROUNDING.sources and len(back.grounding.citations) == 3


def test_responses_search_tools_in_and_items_out():
    request = r.decode_request({"model": "m", "input": "x", "tools": [{"type": "web_search_preview"}],
                                "tool_choice": {"type": "web_search_preview"}})
    assert request.search == c.WebSearch() and request.tool_choice is None
    body = r.encode_response(grounded_answer(), request)
    search, message = body["output"]
    assert search["type"] == "web_search_call" and search["action"]["query"] == "café zürich hours"
    assert [a["url"] for a in message["content"][0]["annotations"]] == [
        "https://g.example/1", "gs://doc", "https://g.example/3"]
    codex = r.decode_request({"model": "m", "input": "x", "tools": [
        {"type": "function", "name": "f", "parameters": {}}, {"type": "web_search", "external_web_access": False}]})
    assert codex.search is not None and [t.name for t in codex.tools] == ["f"]  # Google will drop the search


@pytest.mark.parametrize("model", ["gemini-3-flash"])
def test_gemini_caller_gets_metadata_from_any_upstream(model):
    request = g.caller.decode_request({"contents": [{"parts": [{"text": "x"}]}]}, model=model)
    whole = g.caller.encode_response(grounded_answer(), request)
    assert g.grounding_in(whole["candidates"][0]["groundingMetadata"], TEXT) == GROUNDING
    encoder = g.caller.stream_encoder(request, "r", model, 0)
    data = encoder.encode([c.BlockStart(0, c.Text("")), c.TextDelta(0, TEXT), c.Grounded(GROUNDING), c.BlockStop(0),
                           c.Finish("stop", c.Usage())])
    last = json.loads(data.decode().strip().split("\r\n\r\n")[-1].removeprefix("data: "))
    assert g.grounding_in(last["candidates"][0]["groundingMetadata"], TEXT) == GROUNDING


def test_search_blocks_made_here_do_not_reach_anthropic_but_its_own_do():
    from addons.translate import passthrough

    made = a.caller.encode_response(grounded_answer(), search_request())["content"]
    own = [{"type": "server_tool_use", "id": "srvtoolu_x", "name": "web_search", "input": {"query": "q"}},
           {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_x",
            "content": [{"type": "web_search_result", "url": "u", "title": "t", "encrypted_content": "EqAnthropic"}]}]
    history = {"model": "m", "max_tokens": 9, "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": own + made}, {"role": "user", "content": "more"}]}
    sent = passthrough.request_body("anthropic", "anthropic", history, "claude-sonnet-4-5", stream=False)
    blocks = sent["messages"][1]["content"]
    assert blocks[:2] == own  # Anthropic's own blocks go back as they came
    assert [b["type"] for b in blocks[2:]] == ["text", "text", "text"] and not any("citations" in b for b in blocks[2:])
    assert "".join(b["text"] for b in blocks[2:]) == TEXT
    assert history["messages"][1]["content"][2]["type"] == "server_tool_use"  # the caller's body is left as it was


def test_a_responses_stream_annotates_text_whose_block_ended_before_its_sources_came():
    """An Anthropic upstream closes each text block before the answer ends, and the sources are
    known at its end: a searching request's message items are done only then."""
    import openai
    from openai.lib.streaming.responses._responses import ResponseStreamState
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    request = r.decode_request({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})
    encoder = r.stream_encoder(request, "resp_1", "m", 0)
    data = encoder.encode([c.BlockStart(0, c.Text("")), c.TextDelta(0, TEXT), c.BlockStop(0), c.Grounded(GROUNDING),
                           c.Finish("stop", c.Usage(1, 1))])
    adapter = TypeAdapter(ResponseStreamEvent)
    events = [adapter.validate_json(line[6:]) for line in data.decode().splitlines() if line.startswith("data: ")]
    state = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    for event in events:
        state.handle_event(event)
    final = state._completed_response
    message = next(item for item in final.output if item.type == "message")
    assert len(message.content[0].annotations) == 3 and final.output[-1].type == "web_search_call"
    failing = r.stream_encoder(request, "resp_2", "m", 0)
    cut = failing.encode([c.BlockStart(0, c.Text("")), c.TextDelta(0, "par"), c.BlockStop(0), c.StreamError("gone")])
    kinds = [json.loads(line[6:])["type"] for line in cut.decode().splitlines() if line.startswith("data: ")]
    assert kinds[-2:] == ["response.output_item.done", "response.failed"]  # the ended text still done first


def test_anthropic_text_split_at_citations_is_one_text_again():
    stream = a.caller.stream_encoder(search_request(), "r1", "m", 0).encode(
        [c.BlockStart(0, c.Text("")), c.TextDelta(0, TEXT), c.Grounded(GROUNDING), c.BlockStop(0), c.Finish("stop", c.Usage())])
    decoder = a.upstream.stream_decoder()
    events = decoder.feed(stream) + decoder.close()
    assert [type(e).__name__ for e in events] == ["BlockStart", "TextDelta", "TextDelta", "TextDelta", "Grounded",
                                                  "BlockStop", "Finish"]
    assert {e.index for e in events if hasattr(e, "index")} == {2}  # after the two search blocks
    assert "".join(e.text for e in events if isinstance(e, c.TextDelta)) == TEXT
    assert events[4].grounding.sources == GROUNDING.sources and len(events[4].grounding.citations) == 3
    whole = a.upstream.decode_response(a.caller.encode_response(grounded_answer(), search_request()))
    assert whole.parts == [c.Text(TEXT)] and whole.grounding.queries == GROUNDING.queries
