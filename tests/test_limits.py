"""Limits that protect the gateway from bad clients: body and head size, slow and idle clients,
the number of connections. Each refusal is an answer in the caller's protocol (or a close where
no answer can be given), never a hang."""

from __future__ import annotations

import gzip
import json
import select
import socket
import time
import zlib
from collections.abc import Iterator

import httpx
import pytest

from mitmproxy.net import encoding

from conftest import API_KEY, Gateway, prepare_gateway

MODEL = "gemini-2.5-flash"
CLIENT_TIMEOUT = 1.5
KEEPALIVE = 2.0
LIMITS = {"max_body_mb": 1, "max_header_kb": 8, "client_timeout": CLIENT_TIMEOUT, "keepalive_timeout": KEEPALIVE}


@pytest.fixture(scope="module")
def gateway(sim, tmp_path_factory) -> Iterator[Gateway]:
    gw = prepare_gateway(sim, tmp_path_factory.mktemp("limits"), {"proxy": LIMITS})
    gw.add_google()
    gw.start()
    yield gw
    gw.stop()


def connect(gateway: Gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=10)


def read_answer(sock: socket.socket, within: float) -> bytes:
    """Everything the gateway sends until it closes, waiting at most `within` seconds."""
    deadline = time.monotonic() + within
    data = b""
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the connection was still open after {within} s; got {data[:300]!r}")


def parse(answer: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def head(method: str, path: str, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", f"authorization: Bearer {API_KEY}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- sizes ------------------------------------------------------------------------------------------


def test_a_declared_body_over_max_body_is_refused_at_once(gateway):
    big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * (2 << 20)}]})
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=big, headers=gateway.json_headers(), timeout=20)
    assert response.status_code == 413
    assert "larger than 1 MB" in response.json()["error"]["message"]
    anthropic = httpx.post(f"{gateway.url}/v1/messages", content=big, headers=gateway.json_headers(), timeout=20)
    assert anthropic.status_code == 413 and anthropic.json()["type"] == "error"


def test_a_chunked_body_is_cut_off_at_max_body(gateway):
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}]}'

    sock = connect(gateway)
    sock.sendall(head("POST", f"/v1beta/models/{MODEL}:generateContent", content_type="application/json", transfer_encoding="chunked"))
    for chunk in chunks():
        try:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            break
    status, _, body = parse(read_answer(sock, 10))
    assert status == 413
    assert body["error"]["status"] == "INVALID_ARGUMENT"  # Gemini's shape: the path told the protocol


def test_a_body_within_the_limit_is_served(gateway):
    text = "y" * (900 * 1024)
    response = httpx.post(
        f"{gateway.url}/v1/messages/count_tokens", headers=gateway.json_headers(), timeout=20,
        json={"model": MODEL, "messages": [{"role": "user", "content": text}]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["input_tokens"] > 1000


def peak_rss_kb(gateway: Gateway) -> int:
    status = open(f"/proc/{gateway.proc.pid}/status").read()
    return int(status.split("VmHWM:")[1].split()[0])


def count(gateway: Gateway, body: bytes, content_encoding: str) -> httpx.Response:
    headers = {**gateway.json_headers(), "content-encoding": content_encoding}
    return httpx.post(f"{gateway.url}/v1/messages/count_tokens", content=body, headers=headers, timeout=20)


COUNT_BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hello " * 2000}]}).encode()


@pytest.mark.parametrize("name", ["gzip", "deflate", "br", "zstd"])
def test_a_compressed_body_is_served(gateway, name):
    response = count(gateway, encoding.encode(COUNT_BODY, name), name)
    assert response.status_code == 200, response.text
    assert response.json()["input_tokens"] > 1000


def test_a_compression_bomb_is_refused_without_inflating_it(gateway):
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip, built without holding it
    bomb = packer.compress(b'{"model": "x", "messages": [{"role": "user", "content": "')
    bomb += b"".join(packer.compress(b"a" * (1 << 20)) for _ in range(300))
    bomb += packer.compress(b'"}]}') + packer.flush()
    assert len(bomb) < 1 << 20  # it passes the size check as sent
    before = peak_rss_kb(gateway)
    response = count(gateway, bomb, "gzip")
    assert response.status_code == 413
    assert "once decoded" in response.json()["error"]["message"]
    assert peak_rss_kb(gateway) - before < 64 * 1024  # 300 MB were never held
    assert count(gateway, gzip.compress(COUNT_BODY), "gzip").status_code == 200


def test_an_unknown_or_broken_encoding_is_a_clear_error(gateway):
    unknown = count(gateway, COUNT_BODY, "compress")
    assert unknown.status_code == 415 and "compress" in unknown.json()["error"]["message"]
    broken = count(gateway, gzip.compress(COUNT_BODY)[:-40], "gzip")
    assert broken.status_code == 400 and "not valid gzip" in broken.json()["error"]["message"]


def test_a_head_over_max_header_is_refused(gateway):
    response = httpx.post(f"{gateway.url}/v1/messages", headers={**gateway.json_headers(), "x-pad": "a" * 9000}, json={})
    assert response.status_code == 431
    assert response.json()["type"] == "error"  # Anthropic's shape
    # A head that never ends: answered and closed once it passes the limit, not buffered on.
    sock = connect(gateway)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pad: ")
    deadline = time.monotonic() + 10
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        while time.monotonic() < deadline:
            sock.sendall(b"a" * 65536)
    assert httpx.get(f"{gateway.url}/healthz", headers=gateway.auth()).status_code == 200


# --- slow and idle clients -------------------------------------------------------------------------------------


def test_a_client_sending_a_byte_at_a_time_gets_408(gateway):
    request = head("POST", "/v1/messages", content_type="application/json", x_pad="p" * 4000)
    sock = connect(gateway)
    started = time.monotonic()
    answer = b""
    for byte in request:  # 4 KB at 20 bytes a second: 200 s if it were let through
        if select.select([sock], [], [], 0.05)[0]:
            answer = read_answer(sock, 5)
            break
        sock.send(bytes([byte]))
    took = time.monotonic() - started
    status, headers, body = parse(answer)
    assert status == 408 and headers["connection"] == "close"
    assert body["type"] == "error" and "client_timeout" in body["error"]["message"]  # Anthropic's, from the request line
    assert CLIENT_TIMEOUT - 0.1 < took < CLIENT_TIMEOUT + 3


def test_a_body_sent_a_byte_at_a_time_gets_408(gateway):
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "slow"}]}).encode()
    sock = connect(gateway)
    sock.sendall(head("POST", "/v1/chat/completions", content_type="application/json", content_length=str(len(body))))
    started = time.monotonic()
    answer = b""
    for byte in body:
        if select.select([sock], [], [], 0.1)[0]:
            answer = read_answer(sock, 5)
            break
        sock.send(bytes([byte]))
    status, _, error = parse(answer)
    assert status == 408 and error["error"]["code"]  # OpenAI's shape
    assert time.monotonic() - started < CLIENT_TIMEOUT + 3


def test_slow_clients_do_not_hold_up_others(gateway):
    slow = [connect(gateway) for _ in range(5)]
    for sock in slow:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
    response = httpx.post(f"{gateway.url}/v1/chat/completions", headers=gateway.json_headers(), timeout=10,
                          json={"model": MODEL, "messages": [{"role": "user", "content": "meanwhile"}]})
    assert response.json()["choices"][0]["message"]["content"] == "echo: meanwhile"
    for sock in slow:
        assert parse(read_answer(sock, CLIENT_TIMEOUT + 3))[0] == 408


def test_an_idle_connection_is_closed_after_keepalive_timeout(gateway):
    sock = connect(gateway)
    started = time.monotonic()
    assert read_answer(sock, KEEPALIVE + 3) == b""  # closed without an answer: it asked nothing
    assert time.monotonic() - started > KEEPALIVE - 0.1  # not at once: it had keepalive_timeout


def test_a_keep_alive_client_reconnects_after_the_idle_close(gateway):
    with httpx.Client(headers=gateway.auth(), timeout=10) as client:
        assert client.get(f"{gateway.url}/healthz").status_code == 200
        # A connection opened after the client's went idle: once it is closed, so is the client's.
        assert read_answer(connect(gateway), KEEPALIVE + 3) == b""
        assert client.get(f"{gateway.url}/healthz").status_code == 200


def test_a_long_answer_is_not_cut_by_client_timeout(gateway, sim):
    """Deadlines run while the client sends; a stream that takes longer is the gateway's business."""
    sim.settings(chunk_delay=0.5, events=6)  # ~3 s of stream, twice client_timeout
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", headers=gateway.json_headers(), timeout=20,
                      json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "a b c d e f"}]}) as response:
        body = response.read().decode()
    assert body.rstrip().endswith("data: [DONE]")


# --- connections ---------------------------------------------------------------------------------------------


def test_connections_beyond_max_connections_get_503_then_are_closed(make_gateway):
    gateway = make_gateway({"proxy": {"max_connections": 4, "keepalive_timeout": 60}})
    held = [connect(gateway) for _ in range(4)]
    deadline = time.monotonic() + 10
    while True:  # the four are counted once the gateway has accepted them
        response = httpx.post(f"{gateway.url}/v1/messages", headers=gateway.json_headers(), json={}, timeout=10)
        if response.status_code == 503 or time.monotonic() > deadline:
            break
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "overloaded_error"
    assert response.headers["retry-after"] == "1"
    # Past twice the limit a connection is closed at once, answer or not.
    extra = [connect(gateway) for _ in range(6)]
    assert read_answer(extra[-1], 3) == b""
    for sock in held + extra:
        sock.close()
    deadline = time.monotonic() + 10
    while httpx.get(f"{gateway.url}/healthz", headers=gateway.auth()).status_code != 200:
        assert time.monotonic() < deadline, "the gateway did not serve again after the connections closed"
        time.sleep(0.05)
    assert "Traceback" not in gateway.log()


def test_short_of_file_descriptors_it_serves_fewer_connections(make_gateway):
    """Rather than run out of descriptors (then neither accepting nor calling upstreams works)."""
    gateway = make_gateway({"proxy": {"max_connections": 256, "keepalive_timeout": 60}}, start=False)
    gateway.start(fd_limit=200)  # room for (200 - 128) // 5 = 14 connections
    assert "serving at most 14 connections at once" in gateway.log()
    held = [connect(gateway) for _ in range(14)]
    deadline = time.monotonic() + 10
    while httpx.get(f"{gateway.url}/healthz", headers=gateway.auth()).status_code != 503:
        assert time.monotonic() < deadline, "the fifteenth connection was served"
        time.sleep(0.05)
    for sock in held:
        sock.close()
