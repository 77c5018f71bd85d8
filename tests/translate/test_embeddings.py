"""Embeddings in pure form: OpenAI and Gemini requests in, either upstream's body out, answers
back in the caller's shape (floats, or OpenAI's base64 of little-endian float32)."""

from __future__ import annotations

import base64
import math
import struct

import pytest
from openai.types import CreateEmbeddingResponse

from addons.translate import canonical as c
from addons.translate import embeddings as e


def test_openai_requests_in_both_forms():
    one = e.decode_openai({"model": "text-embedding-3-small", "input": "hi", "dimensions": 8, "encoding_format": "base64"})
    assert (one.inputs, one.dimensions, one.encoding_format, one.batch) == (["hi"], 8, "base64", True)
    many = e.decode_openai({"model": "m", "input": ["a", "b"]})
    assert many.inputs == ["a", "b"] and many.encoding_format == "float"
    assert e.encode_gemini(many, "gemini-embedding-001") == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}}]}
    assert e.encode_openai(one, "text-embedding-3-large") == {
        "model": "text-embedding-3-large", "input": ["hi"], "encoding_format": "float", "dimensions": 8}


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "x"}, "model"),
    ({"model": "m", "input": []}, "input"),
    ({"model": "m", "input": [1, 2, 3]}, "input"),
    ({"model": "m", "input": [""]}, "input"),
    ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
])
def test_bad_openai_requests_name_their_field(body, param):
    with pytest.raises(c.BadRequest) as refused:
        e.decode_openai(body)
    assert refused.value.param == param


def test_gemini_requests_single_and_batched():
    single = e.decode_gemini({"content": {"parts": [{"text": "a"}, {"text": "b"}]}, "output_dimensionality": 4,
                              "taskType": "RETRIEVAL_QUERY"}, "models/gemini-embedding-001", batch=False)
    assert (single.model, single.inputs, single.dimensions, single.batch) == ("gemini-embedding-001", ["a b"], 4, False)
    assert e.encode_gemini(single, "gemini-embedding-001") == {
        "content": {"parts": [{"text": "a b"}]}, "outputDimensionality": 4, "taskType": "RETRIEVAL_QUERY"}
    batch = e.decode_gemini({"requests": [{"content": {"parts": [{"text": t}]}, "title": t} for t in "xy"]}, "m", batch=True)
    assert batch.inputs == ["x", "y"] and batch.extras == [{"title": "x"}, {"title": "y"}]
    with pytest.raises(c.BadRequest):
        e.decode_gemini({"requests": [{"content": {"parts": [{"text": "x"}]}, "outputDimensionality": d} for d in (4, 8)]},
                        "m", batch=True)
    with pytest.raises(c.BadRequest):
        e.decode_gemini({"content": {"parts": [{"inlineData": {}}]}}, "m", batch=False)


def test_answers_in_each_callers_shape():
    request = e.decode_openai({"model": "m", "input": ["hello", "hi"], "encoding_format": "base64"})
    answer = e.decode_gemini_answer({"embeddings": [{"values": [0.5, -0.25]}, {"values": [1, 0]}]}, request)
    assert answer.vectors == [[0.5, -0.25], [1.0, 0.0]] and answer.input_tokens == 2 + 1  # estimated
    body = e.encode_openai_answer(answer, request, "gemini-embedding-001")
    assert struct.unpack("<2f", base64.b64decode(body["data"][0]["embedding"])) == (0.5, -0.25)
    request.encoding_format = "float"
    parsed = CreateEmbeddingResponse.model_validate(e.encode_openai_answer(answer, request, "gemini-embedding-001"))
    assert parsed.data[1].embedding == [1.0, 0.0] and parsed.data[1].index == 1
    assert parsed.usage.prompt_tokens == 3 and parsed.model == "gemini-embedding-001"
    openai = e.decode_openai_answer({"data": [{"index": 1, "embedding": e.packed([1.0, 2.0])},
                                              {"index": 0, "embedding": [3.0, 4.0]}], "usage": {"prompt_tokens": 7}}, request)
    assert openai.vectors == [[3.0, 4.0], [1.0, 2.0]] and openai.input_tokens == 7
    single = e.decode_gemini({"content": {"parts": [{"text": "a"}]}}, "m", batch=False)
    assert e.encode_gemini_answer(e.Embeddings([[0.1]], 1), single) == {"embedding": {"values": [0.1]}}
    assert math.isclose(math.hypot(*e.unit([3.0, 4.0])), 1.0)


@pytest.mark.parametrize("body", [{"embeddings": [{"values": ["x"]}]}, {"nothing": 1}, {"embeddings": []}])
def test_answers_that_are_not_embeddings(body):
    with pytest.raises(c.BadUpstreamAnswer):
        e.decode_gemini_answer(body, e.decode_openai({"model": "m", "input": "a"}))
