"""The browser guard: pages the user has open cannot use the gateway, in every auth mode.

A page can POST text/plain or a form to 127.0.0.1 without a CORS preflight, and a DNS-rebinding
page reaches the gateway under its own host name; both are refused before any work, while a page
on a listed origin can call the gateway like any SDK.
"""

from __future__ import annotations

import json

import httpx
import pytest

from addons.guard import body_type_allowed, host_allowed, json_type, split_host
from conftest import API_KEY, Gateway, prepare_gateway

MODEL = "gemini-2.5-flash"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
LISTED = "http://localhost:5173"
MODES = ["off", "strict", "all_except_health"]

# (path, body, the caller's protocol): one API POST of each protocol.
POSTS = [
    ("/v1/chat/completions", CHAT, "openai"),
    ("/v1/messages", MESSAGES, "anthropic"),
    (f"/v1beta/models/{MODEL}:generateContent", GEMINI, "gemini"),
]


def error_shape(response: httpx.Response, protocol: str) -> str:
    """The error message, asserting the body has the protocol's error shape."""
    body = response.json()
    if protocol == "anthropic":
        assert body["type"] == "error" and body["error"]["type"].endswith("_error"), body
    elif protocol == "gemini":
        assert body["error"]["code"] == response.status_code and body["error"]["status"], body
    else:
        assert body["error"]["type"] and "code" in body["error"], body
    return body["error"]["message"]


def generations(gateway: Gateway) -> int:
    return sum(1 for e in gateway.sim.log() if "enerateContent" in e["path"])


@pytest.fixture(scope="module", params=MODES)
def gateway(request, sim, tmp_path_factory):
    config = {"proxy": {"auth_mode": request.param, "cors_origins": [LISTED], "allowed_hosts": ["gateway.lan", "proxy.lan:9999"]}}
    gw = prepare_gateway(sim, tmp_path_factory.mktemp(f"guard-{request.param}"), config)
    gw.add_google()
    gw.start()
    yield gw
    gw.stop()


def post(gateway: Gateway, path: str, body: object, **headers: str) -> httpx.Response:
    sent = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json", **headers}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(gateway.url + path, content=content, headers=sent, timeout=20)


# --- Host ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["attacker.example.com", "rebind.attacker.example:{port}", "localhost.attacker.example:{port}", "127.0.0.1:{other}", "localhost:80"])
def test_a_foreign_host_is_refused_before_any_work(gateway, host):
    host = host.format(port=gateway.port, other=gateway.port + 1)
    before = generations(gateway)
    for path, body, protocol in POSTS:
        response = post(gateway, path, body, host=host)
        assert response.status_code == 421, response.text
        assert "allowed_hosts" in error_shape(response, protocol)
        assert "x-switchyard-account" not in response.headers
    health = httpx.get(f"{gateway.url}/healthz", headers={"host": host, **gateway.auth()}, timeout=10)
    assert health.status_code == 421
    assert generations(gateway) == before


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}", "[::1]:{port}", "gateway.lan", "gateway.lan:{port}", "proxy.lan:9999"])
def test_loopback_names_and_allowed_hosts_are_served(gateway, host):
    response = post(gateway, "/v1/chat/completions", CHAT, host=host.format(port=gateway.port))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo: hi"


def test_allowed_host_with_a_port_matches_that_port_only(gateway):
    response = post(gateway, "/v1/chat/completions", CHAT, host=f"proxy.lan:{gateway.port}")
    assert response.status_code == 421


# --- Origin ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost:5174", "null", "http://attacker.example"])
def test_a_foreign_origin_is_refused(gateway, origin):
    before = generations(gateway)
    for path, body, protocol in POSTS:
        response = post(gateway, path, body, origin=origin)
        assert response.status_code == 403, response.text
        assert "cors_origins" in error_shape(response, protocol)
        assert "access-control-allow-origin" not in response.headers
    preflight = httpx.options(
        f"{gateway.url}/v1/chat/completions",
        headers={"origin": origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type"},
    )
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers
    health = httpx.get(f"{gateway.url}/healthz", headers={"origin": origin, **gateway.auth()})
    assert health.status_code == 403
    assert generations(gateway) == before


def test_the_gateways_own_origin_is_served(gateway):
    response = post(gateway, "/v1/chat/completions", CHAT, origin=f"http://127.0.0.1:{gateway.port}")
    assert response.status_code == 200, response.text


def test_a_listed_origin_gets_preflights_answered(gateway):
    asked = "authorization, content-type, x-api-key, x-goog-api-key, anthropic-version, anthropic-beta, x-stainless-os, x-stainless-retry-count, x-not-allowed"
    response = httpx.options(
        f"{gateway.url}/v1/chat/completions",
        headers={"origin": LISTED, "access-control-request-method": "POST", "access-control-request-headers": asked},
    )
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == LISTED
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert allowed == {h.strip() for h in asked.split(",")} - {"x-not-allowed"}
    assert int(response.headers["access-control-max-age"]) > 0


def test_a_listed_origin_gets_cors_headers_on_answers_and_streams(gateway):
    response = post(gateway, "/v1/chat/completions", CHAT, origin=LISTED)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == LISTED
    assert "x-switchyard-model" in response.headers["access-control-expose-headers"]
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json", "origin": LISTED}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers, timeout=20) as stream:
        assert stream.status_code == 200
        assert stream.headers["access-control-allow-origin"] == LISTED
        body = stream.read().decode()
    assert body.rstrip().endswith("data: [DONE]")
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == "echo: hi"


def test_a_listed_origin_can_read_refusals(gateway):
    """A page the user trusts sees why it was refused (here: its body was not JSON)."""
    response = post(gateway, "/v1/messages", b"hi", origin=LISTED, **{"content-type": "text/plain"})
    assert response.status_code == 415
    assert response.headers["access-control-allow-origin"] == LISTED


# --- body types -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", None),
        ("text/plain;charset=UTF-8", None),
        ("application/x-www-form-urlencoded", b"model=gemini-2.5-flash"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--x--\r\n"),
        (None, None),
    ],
)
def test_posts_that_are_not_json_are_refused(gateway, content_type, body):
    """What a page can send without a preflight (or a Blob with no type) never reaches an account."""
    before = generations(gateway)
    for path, json_body, protocol in POSTS:
        headers = {"authorization": f"Bearer {API_KEY}"}
        if content_type is not None:
            headers["content-type"] = content_type
        content = body if body is not None else json.dumps(json_body).encode()
        response = httpx.post(gateway.url + path, content=content, headers=headers, timeout=20)
        assert response.status_code == 415, response.text
        assert "application/json" in error_shape(response, protocol)
    assert generations(gateway) == before


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.example+json"])
def test_json_in_any_spelling_is_served(gateway, content_type):
    response = post(gateway, "/v1/chat/completions", CHAT, **{"content-type": content_type})
    assert response.status_code == 200, response.text


def test_without_a_key_a_page_is_still_refused_first(gateway):
    """The guard speaks before the key check: a foreign page learns nothing about the key."""
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=json.dumps(CHAT), headers={"content-type": "text/plain"})
    assert response.status_code == 415


# --- the checks themselves ---------------------------------------------------------------------------------


def test_host_rules():
    assert split_host("[::1]:8045") == ("[::1]", 8045)
    assert split_host("[::1]") == ("[::1]", None)
    assert split_host("localhost:x") == ("localhost", -1)
    assert host_allowed("LOCALHOST:8045", 8045, [])
    assert not host_allowed("localhost:8046", 8045, [])
    assert not host_allowed("localhost:x", 8045, [])
    assert not host_allowed("", 8045, [])
    assert host_allowed("gw.lan:1", 8045, ["gw.lan"])
    assert not host_allowed("gw.lan:1", 8045, ["gw.lan:2"])


def test_body_type_rules():
    assert json_type("application/json") and json_type("application/problem+json; x=y")
    assert not json_type("text/json+plain") and not json_type("+json") and not json_type("")
    assert body_type_allowed("/v1/images/edits", "multipart/form-data; boundary=b")
    assert not body_type_allowed("/v1/chat/completions", "multipart/form-data; boundary=b")


def test_refused_flows_keep_the_callers_host_and_hide_the_key(make_gateway, tmp_path):
    """What mitmweb shows (and `-w` saves) of a refused request: the Host it came with, no key."""
    from mitmproxy import io

    saved = tmp_path / "flows"
    gateway = make_gateway(extra=("-w", str(saved)))
    post(gateway, "/v1/chat/completions", CHAT, host="rebind.attacker.example")
    post(gateway, "/v1/messages?key=" + API_KEY, MESSAGES, **{"content-type": "text/plain", "x-api-key": API_KEY})
    gateway.stop()
    with saved.open("rb") as f:
        flows = [flow for flow in io.FlowReader(f).stream() if flow.request.path.startswith("/v1/")]
    assert [flow.response.status_code for flow in flows] == [421, 415]
    assert flows[0].request.host_header == "rebind.attacker.example"
    for flow in flows:
        assert API_KEY not in str(flow.request.headers) + flow.request.path
