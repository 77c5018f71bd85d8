"""Answers streamed straight into their flow's response (`addons/direct.py`), through a real mitmdump."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import free_port

TOP = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# A tiny addon: each path is a body with its own behaviour; /state tells what the bodies saw.
SCRIPT = """
import asyncio, json, sys
sys.path.insert(0, {top!r})
from mitmproxy import http
from addons import direct

released = asyncio.Event()
hook_released = asyncio.Event()
seen = {{"closed": [], "responses": []}}


async def held():
    yield b"one"
    await released.wait()
    yield b"two"


async def empty():
    return
    yield


async def broken():
    yield b"part"
    raise RuntimeError("the source broke")


async def endless(name):
    try:
        while True:
            yield b"tick"
            await asyncio.sleep(0.01)
    finally:
        seen["closed"].append(name)


class Test:
    async def request(self, flow):
        path = flow.request.path
        if path == "/release":
            released.set()
            flow.response = http.Response.make(200, b"released")
        elif path == "/state":
            flow.response = http.Response.make(200, json.dumps({{**seen, "streaming": direct.streaming()}}))
        elif path == "/held":
            await direct.answer(flow, 200, [("content-type", "text/plain")], held())
        elif path == "/broken":
            await direct.answer(flow, 200, [("content-type", "text/plain")], broken())
        elif path.startswith("/endless"):
            await direct.answer(flow, 200, [("content-type", "text/plain")], endless(path))
        elif path == "/killed":
            await direct.answer(flow, 200, [], endless(path))
            flow.kill()
        elif path == "/empty":
            await direct.answer(flow, 204, [], empty())
        elif path == "/whole":
            flow.response = http.Response.make(200, b"all of it", {{"content-type": "text/plain"}})
        elif path == "/release-hook":
            hook_released.set()
            flow.response = http.Response.make(200, b"hook released")

    def responseheaders(self, flow):
        if flow.request.path == "/whole":
            flow.response.headers["x-set-in"] = "responseheaders"

    async def response(self, flow):
        if flow.request.path == "/whole":
            await hook_released.wait()
        seen["responses"].append([flow.request.path, len(flow.response.raw_content or b"")])

    def error(self, flow):
        direct.discard(flow)


addons = [Test()]
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    script = tmp_path_factory.mktemp("direct") / "addon.py"
    script.write_text(SCRIPT.format(top=str(TOP)))
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "mitmdump"), "-q", "--mode", f"reverse:http://127.0.0.1:1@127.0.0.1:{port}",
         "--set", "connection_strategy=lazy", "--set", "store_streamed_bodies=true", "-s", str(script)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{url}/state", timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("mitmdump with the test addon did not start")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def state(url: str) -> dict:
    return httpx.get(f"{url}/state", timeout=5).json()


def test_each_chunk_reaches_the_caller_as_the_body_yields_it(proxy):
    with httpx.Client(timeout=5) as client, client.stream("GET", f"{proxy}/held") as response:
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked" and "content-length" not in response.headers
        chunks = response.iter_raw()
        assert next(chunks) == b"one"  # while the body still waits: it was not read whole first
        assert httpx.get(f"{proxy}/release", timeout=5).text == "released"
        assert b"".join(chunks) == b"two"
    # mitmproxy's streaming state did the rest: the response hook saw the whole body.
    assert ["/held", 6] in state(proxy)["responses"]


def test_one_connection_carries_one_streamed_answer_after_another(proxy):
    assert httpx.get(f"{proxy}/release", timeout=5).text == "released"
    sock = socket.create_connection(("127.0.0.1", int(proxy.rsplit(":", 1)[1])), timeout=5)
    with sock, sock.makefile("rb") as answers:
        for _ in range(3):
            sock.sendall(b"GET /held HTTP/1.1\r\nhost: x\r\n\r\n")
            assert answers.readline().startswith(b"HTTP/1.1 200")
            while answers.readline() != b"\r\n":
                pass
            body = b""
            while size := int(answers.readline(), 16):
                body += answers.read(size + 2)[:-2]
            assert answers.readline() == b"\r\n"
            assert body == b"onetwo"


def test_a_body_that_breaks_cuts_the_answer_off(proxy):
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{proxy}/broken", timeout=5)
    assert httpx.get(f"{proxy}/state", timeout=5).status_code == 200  # the proxy carries on


def test_a_caller_that_leaves_stops_the_body(proxy):
    sock = socket.create_connection(("127.0.0.1", int(proxy.rsplit(":", 1)[1])))
    sock.sendall(b"GET /endless-left HTTP/1.1\r\nhost: x\r\n\r\n")
    received = b""
    while b"tick" not in received:
        received += sock.recv(4096)
    sock.close()
    deadline = time.monotonic() + 5
    while "/endless-left" not in (seen := state(proxy))["closed"] or seen["streaming"]:
        assert time.monotonic() < deadline, seen
        time.sleep(0.02)


def test_an_empty_body_is_an_empty_answer(proxy):
    answer = httpx.get(f"{proxy}/empty", timeout=5)
    assert answer.status_code == 204 and answer.content == b""


def test_a_flow_that_fails_before_its_answer_went_out_closes_the_body(proxy):
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{proxy}/killed", timeout=5)
    deadline = time.monotonic() + 5
    while "/killed" not in (seen := state(proxy))["closed"]:
        assert time.monotonic() < deadline, seen
        time.sleep(0.02)
    assert seen["streaming"] == 0


def test_a_whole_answer_reaches_the_caller_before_the_response_hook(proxy):
    # The test addon's `response` hook holds /whole until /release-hook: the caller has it all before.
    answer = httpx.get(f"{proxy}/whole", timeout=5)
    assert answer.status_code == 200 and answer.content == b"all of it"
    assert answer.headers["x-set-in"] == "responseheaders"  # what `responseheaders` changes still goes out
    assert ["/whole", 9] not in state(proxy)["responses"]  # the hook is still waiting
    assert httpx.get(f"{proxy}/release-hook", timeout=5).text == "hook released"
    deadline = time.monotonic() + 5
    while ["/whole", 9] not in (seen := state(proxy))["responses"]:
        assert time.monotonic() < deadline, seen
        time.sleep(0.02)
