"""The loopback relay that replays parked answers to mitmproxy."""

from __future__ import annotations

import asyncio

import httpx

from addons import relay as relay_module
from addons.relay import TOKEN_HEADER, Relay


async def _chunks(parts: list[bytes], closed: list[bool]):
    try:
        for part in parts:
            await asyncio.sleep(0.01)
            yield part
    finally:
        closed.append(True)


async def test_a_parked_answer_is_replayed_chunk_by_chunk_once():
    relay = Relay()
    await relay.start()
    closed: list[bool] = []
    abandoned: list[bool] = []
    token = relay.park(200, [("content-type", "text/event-stream")], _chunks([b"a", b"bc", b"d"], closed), lambda: abandoned.append(True))
    async with httpx.AsyncClient() as client:
        received = []
        async with client.stream("POST", f"http://127.0.0.1:{relay.port}/v1/x", headers={TOKEN_HEADER: token}, content=b"{}") as response:
            assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
            async for chunk in response.aiter_raw():
                received.append(chunk)
        assert b"".join(received) == b"abcd"
        again = await client.post(f"http://127.0.0.1:{relay.port}/v1/x", headers={TOKEN_HEADER: token})
        assert again.status_code == 404  # one-time tokens
    assert closed == [True] and abandoned == []
    relay.close()


async def test_an_unclaimed_answer_is_abandoned(monkeypatch):
    monkeypatch.setattr(relay_module, "UNCLAIMED_TTL", 0.2)
    relay = Relay()
    await relay.start()
    abandoned: list[bool] = []
    relay.park(200, [], _chunks([b"x"], []), lambda: abandoned.append(True))
    for _ in range(200):
        if abandoned:
            break
        await asyncio.sleep(0.05)
    assert abandoned == [True]
    token = relay.park(200, [], _chunks([b"x"], []), lambda: abandoned.append(True))
    relay.discard(token)  # the flow failed before it reached the relay
    assert abandoned == [True, True]
    relay.close()


async def test_a_caller_that_goes_away_closes_the_body():
    relay = Relay()
    await relay.start()
    closed: list[bool] = []

    async def endless():
        try:
            while True:
                await asyncio.sleep(0.01)
                yield b"x" * 65536
        finally:
            closed.append(True)

    token = relay.park(200, [], endless())
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(f"GET / HTTP/1.1\r\nhost: x\r\n{TOKEN_HEADER}: {token}\r\n\r\n".encode())
    await writer.drain()
    await reader.read(1000)
    writer.transport.abort()
    for _ in range(100):
        if closed:
            break
        await asyncio.sleep(0.05)
    assert closed == [True]
    relay.close()
