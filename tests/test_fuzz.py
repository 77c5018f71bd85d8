"""Fuzzing with Hypothesis: near-valid and hostile request bodies for every protocol.

Two layers:
- the pure translators (`addons/translate`), in this process, over thousands of bodies per
  operation: decoding raises only `canonical.BadRequest` (or returns), and what the gateway
  then does with a decoded request (session key, signatures, token estimate, every upstream
  dialect's encoding, the Cloud Code preparation, the caller's answer and stream encoders)
  raises nothing else either;
- a real gateway in front of the simulated upstream, with a Google account and a key of each
  kind: every answer is 2xx or 4xx in the caller protocol's shape, the gateway's log has no
  traceback and /healthz answers after the run.

The runs are derandomized with bounded examples, so every run (and CI) sees the same cases.
For a longer run with fresh random cases, locally:

    SWITCHYARD_FUZZ=20 .venv/bin/python -m pytest tests/test_fuzz.py -q

(`SWITCHYARD_FUZZ=N` multiplies the examples by N and draws new ones on every run; a failure
prints the `@reproduce_failure` line to replay it.)
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conftest import prepare_gateway
from sim.defaults import DEFAULT_KEY_MODELS
from fuzz_kit import CASES, MODELS, Case, bodies, path_models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addons import estimate
from addons.session import session_key
from addons.signatures import SignatureCache, model_family
from addons.translate import canonical as c
from addons.translate import cloudcode, jsonbody, openai_responses, passthrough, registry
from pool.accounts import Account, AccountStore, new_id
from pool_rig import add_google, home_of

SCALE = int(os.environ.get("SWITCHYARD_FUZZ", "0") or 0)


def fuzz_settings(examples: int) -> settings:
    """Bounded and derandomized by default; SWITCHYARD_FUZZ=N: N times the examples, random."""
    return settings(
        max_examples=examples * max(SCALE, 1),
        derandomize=SCALE == 0,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


# (dialect, upstream model): every way the gateway may send a decoded request on.
UPSTREAMS = (
    ("antigravity", "gemini-2.5-flash"),
    ("antigravity", "claude-sonnet-4-6"),
    ("gemini", "gemini-2.5-flash"),
    ("openai", "gpt-4o"),
    ("anthropic", "claude-sonnet-4-5"),
)
HEADERS = {"x-claude-code-session-id": "s", "session-id": "s"}


def answer(request: c.Request) -> c.Response:
    """An upstream answer with a bit of everything, for the caller's encoders."""
    names = [t.name for t in request.tools] or ["look"]
    parts: list[c.Part] = [
        c.Thinking("hm", signature="c2ln"),
        c.Text("done"),
        c.ToolCall("call_9", names[0], {"path": "."}, signature="c2ln"),
    ]
    return c.Response("r1", request.model, parts, "tool_calls", c.Usage(10, 5, 2, 1))


def events(request: c.Request) -> list[c.Event]:
    names = [t.name for t in request.tools] or ["look"]
    return [
        c.BlockStart(0, c.Thinking("")), c.ThinkingDelta(0, "hm"), c.SignatureDelta(0, "c2ln"), c.BlockStop(0),
        c.BlockStart(1, c.Text("")), c.TextDelta(1, "done"), c.BlockStop(1),
        c.BlockStart(2, c.ToolCall("call_9", names[0])), c.ToolArgsDelta(2, '{"path":'), c.ToolArgsDelta(2, '"."}'), c.BlockStop(2),
        c.Finish("tool_calls", c.Usage(10, 5, 2, 1)),
    ]


def decode(case: Case, body: Any, model: str | None) -> c.Request | None:
    """The caller protocol's decoding, as the gateway calls it; None for a refused body."""
    caller: Any = registry.CALLERS[case.protocol]
    try:
        if case.operation == "count_tokens":
            return caller.decode_count_request(body, model=model)
        if case.protocol == "openai_responses":
            return caller.decode_request(body, model=model, history=None)
        return caller.decode_request(body, model=model)
    except c.BadRequest as e:
        assert isinstance(e.message, str) and e.message and 400 <= e.status < 500
        return None


def onward(case: Case, body: dict[str, Any], request: c.Request) -> None:
    """What the gateway does with a decoded request before and after the upstream."""
    session_key(HEADERS, body, request)
    estimate.tokens(request)
    cache = SignatureCache()
    cache.remember(answer(request).parts, "gemini")  # so `restore` has something to put back
    cache.restore(request)
    for dialect, model in UPSTREAMS:
        family = model_family(model, dialect)
        if passthrough.is_native(case.protocol, dialect) and cache.honoured(request, family):
            out = passthrough.request_body(case.protocol, dialect, body, model, stream=request.stream)
        else:
            out = registry.DIALECTS[dialect].encode_request(cache.for_upstream(request, family), model)
        if dialect == "antigravity":
            out = cloudcode.prepare(out, model, output_limit=8192, signature_family=cache.family)
        json.dumps(out, ensure_ascii=False).encode()  # what the dispatcher sends
    if case.operation == "count_tokens":
        json.dumps(registry.CALLERS[case.protocol].encode_count_response(estimate.tokens(request)))  # type: ignore[attr-defined]
        return
    caller: Any = registry.CALLERS[case.protocol]
    json.dumps(caller.encode_response(answer(request), request), ensure_ascii=False).encode()
    options = {"sse": "alt=sse" in case.path} if case.protocol == "gemini" else {}
    encoder = caller.stream_encoder(request, "r1", request.model, 0, **options)
    encoder.encode(events(request)).decode()
    if case.protocol == "openai_responses":
        openai_responses.to_history(request, answer(request))


def through_the_gateway(case: Case, body: Any, model: str | None) -> None:
    """The body as the gateway would see it (JSON on the wire, parsed once), then decoded and
    taken onward; only c.BadRequest may stop it."""
    try:
        parsed = jsonbody.parse(json.dumps(body).encode())
    except c.BadRequest:
        return
    except (ValueError, RecursionError):
        return  # json.dumps itself cannot write it: no client could send it
    request = decode(case, parsed, model)
    if request is None:
        return
    try:
        onward(case, parsed, request)
    except c.BadRequest:
        pass


# --- layer (a): the translators, in this process ------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_translators_refuse_bad_bodies_only_with_bad_request(name: str) -> None:
    case = CASES[name]
    needs_model = "{model}" in case.path

    @fuzz_settings(500)
    @given(body=bodies(case), model=path_models() if needs_model else st.none())
    def run(body: Any, model: str | None) -> None:
        if jsonbody.shallow(body):  # the translators may rely on the door's depth limit, nothing more
            decode(case, body, model)  # the raw object: lone surrogates, infinities and all
        through_the_gateway(case, body, model)

    run()


def test_the_seeds_themselves_decode_and_go_onward() -> None:
    """The strategies start from bodies the translators take; if a seed broke, the fuzzing would
    only ever test refusals."""
    for case in CASES.values():
        for seed in case.seeds:
            request = decode(case, seed, "gemini-2.5-flash" if "{model}" in case.path else None)
            assert request is not None, case.name
            onward(case, seed, request)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b'{"a": NaN}', "not valid JSON"),
        (b'{"a": -Infinity}', "not valid JSON"),
        (b'{"a": 1e999}', "too large"),
        (b'{"a": ' + b"[" * 200 + b"]" * 200 + b"}", "nested too deeply"),
        (b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested too deeply"),
        (b'{"a": "\\ud800"}', "unpaired UTF-16 surrogate"),
        (b'{"a": "x\\udc00y"}', "unpaired UTF-16 surrogate"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (b"", "not valid JSON"),
    ],
)
def test_bodies_no_upstream_could_take_are_refused_at_the_door(raw: bytes, needle: str) -> None:
    with pytest.raises(c.BadRequest, match=needle):
        jsonbody.parse(raw)


def test_escaped_surrogate_pairs_are_fine() -> None:
    assert jsonbody.parse(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}
    assert jsonbody.parse('{"a": "\\\\ud800 is text"}'.encode()) == {"a": "\\ud800 is text"}




# --- layer (b): a real gateway ---------------------------------------------------------------------

CONTENT_TYPES = (
    "application/json", "application/json; charset=utf-8", "application/json; charset=utf-16", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "\u00e9/\u00e9", "application/json, text/html",
)


def error_shape(protocol: str, body: Any) -> bool:
    """Whether `body` is an error in the caller protocol's own shape."""
    if not isinstance(body, dict):
        return False
    if protocol == "anthropic":
        error = body.get("error")
        return body.get("type") == "error" and isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)
    error = body.get("error")
    if protocol == "gemini":
        return isinstance(error, dict) and isinstance(error.get("code"), int) and isinstance(error.get("message"), str) and isinstance(error.get("status"), str)
    return isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)


@dataclass
class Sent:
    name: str  # of the case
    path: str
    content: bytes
    headers: dict[str, str]


def _wire(body: Any, ascii_only: bool) -> bytes:
    """JSON as a client would write it; a body with lone surrogates goes escaped (it cannot be
    UTF-8), one with infinities as `Infinity` (what JSON.stringify cannot, but Python can)."""
    try:
        return json.dumps(body, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:
        return json.dumps(body).encode()


@st.composite
def sent(draw: st.DrawFn) -> Sent:
    case = CASES[draw(st.sampled_from(sorted(CASES)))]
    model = draw(st.sampled_from(MODELS[:7]) | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#%"), max_size=10))
    path = case.path.replace("{model}", model or "gemini-2.5-flash")
    kind = draw(st.sampled_from(("json", "json", "json", "cut", "noise")))
    body = draw(bodies(case))
    if isinstance(body, dict) and case.protocol != "gemini" and case.operation == "generate" and draw(st.booleans()):
        body["stream"] = True  # the streamed way through (direct streaming, stream encoders) half of the time
    content = _wire(body, draw(st.booleans())) if kind != "noise" else draw(st.binary(max_size=3000))
    if kind == "cut":
        content = content[: draw(st.integers(0, len(content)))] + draw(st.binary(max_size=8))
    headers = {"content-type": draw(st.sampled_from(CONTENT_TYPES))}
    if case.protocol == "anthropic":
        headers["anthropic-version"] = "2023-06-01"
    if draw(st.integers(0, 9)) == 0:
        headers["content-encoding"] = draw(st.sampled_from(("gzip", "br", "identity", "bogus")))
    return Sent(case.name, path, content, headers)


def check_answer(item: Sent, response: httpx.Response) -> None:
    protocol = CASES[item.name].protocol
    status = response.status_code
    assert status < 500, f"{item.path} answered {status}: {response.text[:300]}"
    if status >= 400:
        assert error_shape(protocol, response.json()), f"{item.path} {status}: not a {protocol} error: {response.text[:300]}"
        return
    assert 200 <= status < 300
    kind = response.headers.get("content-type", "")
    if "text/event-stream" in kind:
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                json.loads(line[5:])
    else:
        assert isinstance(response.json(), dict | list)


@pytest.fixture(scope="module")
def fuzz_gateway(sim: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One gateway for the module: a Google account and a Gemini, OpenAI and Anthropic key."""
    gateway = prepare_gateway(sim, tmp_path_factory.mktemp("fuzz"), {"proxy": {"request_timeout": 15}})
    home = home_of(gateway.home)
    add_google(sim, home)
    store = AccountStore(home.accounts_file)
    for kind, base in (("gemini", sim.url), ("openai", f"{sim.url}/v1"), ("anthropic", sim.url)):
        key = f"sk-fuzz-{kind}-{uuid.uuid4().hex}"
        sim.add_api_key(key, kind)
        # Exactly the models the simulated key serves: claude-sonnet-4-6 is the Google account's alone.
        store.add(Account(id=new_id(), kind=kind, secret=key, base_url=base, models=list(DEFAULT_KEY_MODELS[kind])))
    gemma = f"sk-fuzz-gemma-{uuid.uuid4().hex}"  # serves gemma-* by its glob: odd model names go into its upstream URL
    sim.add_api_key(gemma, "gemini", ["gemma-*"])
    store.add(Account(id=new_id(), kind="gemini", secret=gemma, base_url=sim.url, models=["gemma-*"], label="gemma"))
    gateway.start()
    yield gateway
    gateway.stop()


def test_the_gateway_answers_fuzzed_requests_with_2xx_or_4xx_in_the_callers_shape(fuzz_gateway: Any) -> None:
    gateway = fuzz_gateway
    client = httpx.Client(base_url=gateway.url, headers=gateway.auth(), timeout=30)
    statuses: dict[int, int] = {}

    @fuzz_settings(400)
    @given(item=sent())
    def run(item: Sent) -> None:
        headers = {k: v.encode() for k, v in item.headers.items()}  # bytes: httpx sends them as they are
        response = client.post(item.path, content=item.content, headers=headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        check_answer(item, response)

    with client:
        run()
        assert client.get("/healthz").status_code == 200
    assert statuses.get(200, 0) > 0 and sum(v for k, v in statuses.items() if 400 <= k < 500) > 0, statuses
    assert "Traceback" not in gateway.log()


def test_raw_bytes_in_the_path_and_headers_get_a_4xx(fuzz_gateway: Any) -> None:
    """What no HTTP library sends but a socket can: bytes that are not UTF-8 in the request line
    and in headers (mitmproxy hands them on as surrogates)."""
    gateway = fuzz_gateway
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).encode()
    heads = [
        b"POST /v1beta/models/gemini-2.5-flash\xff:generateContent HTTP/1.1\r\n",
        b"POST /v1beta/models/gemini\x01:countTokens HTTP/1.1\r\n",
        b"POST /v1/chat\xfe/completions HTTP/1.1\r\n",
    ]
    extra = f"authorization: Bearer {gateway.api_key}\r\ncontent-type: application/json\r\n".encode()
    for head in heads:
        answer = raw_request(gateway.port, head + extra + b"x-claude-code-session-id: \xff\xfe\r\n", body)
        assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    chat = json.dumps({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}).encode()  # Cloud Code
    head = b"POST /v1/chat/completions HTTP/1.1\r\n" + extra + b"x-claude-code-session-id: \xff\xfe\r\nsession-id: \xc3\x28\r\n"
    answer = raw_request(gateway.port, head, chat)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert httpx.get(f"{gateway.url}/healthz", headers=gateway.auth(), timeout=10).status_code == 200
    assert "Traceback" not in gateway.log()


def raw_request(port: int, head: bytes, body: bytes) -> bytes:
    """One request written byte for byte; the whole answer (the connection is closed after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"host: 127.0.0.1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("model", ["gemma-3/../../x", "gemma-3?alt=json&key=k", "gemma-3#x", "gemma- 3"])
def test_a_model_name_never_bends_an_upstream_url(fuzz_gateway: Any, model: str) -> None:
    """A body's model name goes into a Gemini key's upstream URL (gemma-* is that key's alone
    here): it stays one path segment there."""
    gateway = fuzz_gateway
    sim: Any = gateway.sim
    since = time.time()
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.auth(), timeout=30)
    # The simulated key serves whatever its glob matches, as one segment ("/" in it: not found).
    assert response.status_code in (200, 404), response.text
    calls = [e for e in sim.log() if e["t"] >= since and e["kind"] == "gemini"]
    # As the upstream decoded it (after a 404 the gateway also asks for the key's model list).
    assert [e["path"] for e in calls if e["path"].endswith(":generateContent")] == [f"/v1beta/models/{model}:generateContent"], calls


@pytest.mark.parametrize("model", ["gemma-3\x00", "gemma-3\r\nset-cookie: a=b", "gemma-\u202e3", "\x1b[31mgemma"])
def test_a_model_name_with_control_characters_is_a_400(fuzz_gateway: Any, model: str) -> None:
    """It would go into the answer's headers (a line break there splits the response) and URLs."""
    gateway = fuzz_gateway
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.auth(), timeout=30)
    assert response.status_code == 400 and "is not a model name" in response.json()["error"]["message"]
