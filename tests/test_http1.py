"""The direct HTTP/1.1 client (pool/http1.py) against a scripted loopback server."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pool.http1 import Client, TransportError, _Dechunker

Reply = Callable[[asyncio.StreamWriter], Awaitable[None]]


class Server:
    """Answers each request with the reply its path names; counts connections and requests."""

    def __init__(self, replies: dict[str, Reply], tls: ssl.SSLContext | None = None) -> None:
        self.replies, self.tls = replies, tls
        self.connections = self.closed = 0
        self.requests: list[bytes] = []
        self.release = asyncio.Event()

    async def __aenter__(self) -> "Server":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                path = head.split(b" ")[1].decode().partition("?")[0]
                await self.replies[path](writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1
            writer.close()


def raw(data: bytes, *, close: bool = False) -> Reply:
    async def reply(writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        if close:
            await writer.drain()
            writer.close()
    return reply


def answer(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{line}\r\n" for line in extra)
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode() + body


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


async def read(client: Client, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    answer_ = await client.request("POST", url, {"content-type": "application/json"}, body, connect_timeout=5)
    try:
        return answer_.status_code, await answer_.aread()
    finally:
        await answer_.aclose()


def test_a_body_by_content_length_and_the_connection_kept_for_the_next_request() -> None:
    async def test() -> None:
        async with Server({"/a": raw(answer(b"hello", "x-one: 1", "X-Two: 2"))}) as server:
            client = Client()
            for _ in range(3):
                got = await client.request("POST", f"{server.url}/a?q=1", {"x-caller": "me"}, b'{"k": 1}', connect_timeout=5)
                assert got.status_code == 200 and got.headers["X-ONE"] == "1" and got.headers["x-two"] == "2"
                assert await got.aread() == b"hello" and got.ended
                await got.aclose()
            assert server.connections == 1 and len(server.requests) == 3
            sent = server.requests[0]
            assert sent.startswith(b"POST /a?q=1 HTTP/1.1\r\n") and sent.endswith(b'\r\n\r\n{"k": 1}')
            assert b"\r\nx-caller: me\r\n" in sent and b"\r\ncontent-length: 8\r\n" in sent
            assert b"\r\nhost: 127.0.0.1:" in sent and b"\r\naccept-encoding: gzip\r\n" in sent
            await client.aclose()
    run(test)


def test_a_chunked_body_arrives_chunk_by_chunk_with_extensions_and_trailers() -> None:
    async def test() -> None:
        server: Server

        async def chunks(writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nfirst\r\n")
            await writer.drain()
            await server.release.wait()
            writer.write(b"6\r\nsecond\r\n0\r\nx-trailer: t\r\n\r\n")

        async with Server({"/c": chunks, "/a": raw(answer(b"next"))}) as server:
            client = Client()
            got = await client.request("POST", f"{server.url}/c", {}, b"", connect_timeout=5)
            pieces = got.aiter_bytes()
            assert await anext(pieces) == b"first"  # before the server has sent the rest
            server.release.set()
            assert [p async for p in pieces] == [b"second"] and got.ended
            await got.aclose()
            assert await read(client, f"{server.url}/a") == (200, b"next")
            assert server.connections == 1
            await client.aclose()
    run(test)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies_are_inflated_whole_and_chunked(encoding: str) -> None:
    text = b"data: " + b"x" * 5000 + b"\n\n"
    packed = gzip.compress(text) if encoding == "gzip" else zlib.compress(text)
    half = len(packed) // 2
    chunked = (f"HTTP/1.1 200 OK\r\ncontent-encoding: {encoding}\r\ntransfer-encoding: chunked\r\n\r\n".encode()
               + f"{half:x}\r\n".encode() + packed[:half] + f"\r\n{len(packed) - half:x}\r\n".encode() + packed[half:] + b"\r\n0\r\n\r\n")

    async def test() -> None:
        async with Server({"/whole": raw(answer(packed, f"content-encoding: {encoding}")), "/chunked": raw(chunked)}) as server:
            client = Client()
            assert await read(client, f"{server.url}/whole") == (200, text)
            assert await read(client, f"{server.url}/chunked") == (200, text)
            await client.aclose()
    run(test)


def test_bodies_that_end_with_the_connection_and_answers_that_close_it_are_not_reused() -> None:
    async def test() -> None:
        async with Server({
            "/eof": raw(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close=True),
            "/close": raw(answer(b"bye", "connection: close"), close=True),
            "/old": raw(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", close=True),
        }) as server:
            client = Client()
            assert await read(client, f"{server.url}/eof") == (200, b"until the end")
            assert await read(client, f"{server.url}/close") == (200, b"bye")
            assert await read(client, f"{server.url}/old") == (200, b"ok")
            assert server.connections == 3
            await client.aclose()
    run(test)


def test_no_body_answers_and_interim_answers() -> None:
    async def test() -> None:
        async with Server({
            "/empty": raw(b"HTTP/1.1 204 No Content\r\n\r\n"),
            "/hints": raw(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + answer(b"real")),
        }) as server:
            client = Client()
            assert await read(client, f"{server.url}/empty") == (204, b"")
            assert await read(client, f"{server.url}/hints") == (200, b"real")
            assert server.connections == 1
            await client.aclose()
    run(test)


@pytest.mark.parametrize(("reply", "says"), [
    (raw(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", close=True), "closed the connection in the answer's body"),
    (raw(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"), "malformed in the answer's body"),
    (raw(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcdef\r\n"), "malformed in the answer's body"),
    (raw(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 5\r\n\r\nnot z"), "malformed in the answer's body"),
    (raw(b"<html>no status line</html>\r\n\r\n"), "malformed before the answer's headers"),
    (raw(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"), "malformed before the answer's headers"),
    (raw(b"", close=True), "closed the connection before the answer's headers"),
])
def test_broken_answers_are_transport_errors_and_their_connection_is_dropped(reply: Reply, says: str) -> None:
    async def test() -> None:
        async with Server({"/bad": reply, "/a": raw(answer(b"fine"))}) as server:
            client = Client()
            with pytest.raises(TransportError) as caught:
                await read(client, f"{server.url}/bad")
            assert says in str(caught.value)
            assert await read(client, f"{server.url}/a") == (200, b"fine")
            assert server.connections == 2  # the broken one was not reused
            await client.aclose()
    run(test)


def test_an_answer_closed_before_its_end_drops_its_connection() -> None:
    async def test() -> None:
        async with Server({"/big": raw(answer(b"x" * 200_000)), "/a": raw(answer(b"fine"))}) as server:
            client = Client()
            got = await client.request("POST", f"{server.url}/big", {}, b"", connect_timeout=5)
            assert len(await anext(got.aiter_bytes())) > 0 and not got.ended
            await got.aclose()
            assert await read(client, f"{server.url}/a") == (200, b"fine")
            assert server.connections == 2
            await client.aclose()
    run(test)


def test_an_idle_connection_the_server_closed_is_not_taken() -> None:
    async def test() -> None:
        async with Server({"/a": raw(answer(b"fine"))}) as server:
            client = Client()
            assert await read(client, f"{server.url}/a") == (200, b"fine")
            server.server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()  # the server's handlers: they close their connections
            await asyncio.sleep(0)
            server.server = await asyncio.start_server(server._serve, "127.0.0.1", int(server.url.rsplit(":", 1)[1]))
            while all(conn.usable for queue in client._idle.values() for conn in queue):
                await asyncio.sleep(0.01)
            assert await read(client, f"{server.url}/a") == (200, b"fine")
            assert server.connections == 2
            await client.aclose()
    run(test)


def test_idle_connections_are_closed_after_their_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pool.http1.IDLE_FOR", 0.2)

    async def test() -> None:
        async with Server({"/a": raw(answer(b"fine"))}) as server:
            client = Client()
            assert await read(client, f"{server.url}/a") == (200, b"fine")
            assert server.closed == 0  # kept for the next request
            while server.closed == 0:  # then closed by the client, with no request to prompt it
                await asyncio.sleep(0.02)
            assert client._idle == {}
            assert await read(client, f"{server.url}/a") == (200, b"fine")
            assert server.connections == 2
            await client.aclose()
    run(test)


def test_connections_are_bounded_and_idle_ones_give_way() -> None:
    async def test() -> None:
        async with Server({"/slow": raw(answer(b"slow")), "/a": raw(answer(b"fine"))}) as one, \
                Server({"/a": raw(answer(b"other"))}) as two:
            client = Client(limit=1)
            held = await client.request("POST", f"{one.url}/slow", {}, b"", connect_timeout=5)
            waiting = asyncio.ensure_future(read(client, f"{two.url}/a"))
            await asyncio.sleep(0.05)
            assert not waiting.done()  # the one connection is in use
            assert await held.aread() == b"slow"
            await held.aclose()  # now idle: it gives way to the other origin
            assert await waiting == (200, b"other")
            assert (one.connections, two.connections) == (1, 1)
            await client.aclose()
    run(test)


def test_refused_connections_and_header_injection_are_transport_errors() -> None:
    async def test() -> None:
        async with Server({}) as server:
            url = server.url
        client = Client()
        with pytest.raises(TransportError) as caught:
            await read(client, f"{url}/a")
        assert "cannot connect to 127.0.0.1:" in str(caught.value)
        async with Server({"/a": raw(answer(b"fine"))}) as server:
            with pytest.raises(TransportError):
                await client.request("POST", f"{server.url}/a", {"x-evil": "a\r\nhost: elsewhere"}, b"", connect_timeout=5)
            assert server.requests == []
            assert await read(client, f"{server.url}/a") == (200, b"fine")
        await client.aclose()
    run(test)


def test_https_is_verified_against_the_systems_authorities(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def test(trusted: bool) -> None:
        async with Server({"/a": raw(answer(b"secret"))}, tls=tls) as server:
            client = Client()
            if trusted:
                assert await read(client, f"{server.url}/a") == (200, b"secret")
            else:
                with pytest.raises(TransportError) as caught:
                    await read(client, f"{server.url}/a")
                assert "cannot connect to 127.0.0.1:" in str(caught.value) and "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
            await client.aclose()

    run(lambda: test(trusted=False))  # a certificate nobody vouches for
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now the system's authorities include it
    run(lambda: test(trusted=True))


CHUNKED = b"5;ext=1\r\nfirst\r\n1\r\n-\r\n0a\r\n0123456789\r\n0\r\nx-trailer: t\r\n\r\n"


@pytest.mark.parametrize("piece", [1, 2, 3, 7, len(CHUNKED)])
def test_chunks_are_undone_however_the_bytes_are_cut(piece: int) -> None:
    dechunker, out = _Dechunker(), b""
    for at in range(0, len(CHUNKED), piece):
        assert not dechunker.done
        out += dechunker.feed(CHUNKED[at:at + piece])
    assert out == b"first-0123456789" and dechunker.done and dechunker.rest == b""


@pytest.mark.parametrize("framing", [b"zz\r\n", b"-5\r\nhello\r\n", b"3\r\nabcdef\r\n", b"\r\n", b"9" * 9000])
def test_chunk_framing_that_lies_is_an_error(framing: bytes) -> None:
    with pytest.raises(ValueError):
        _Dechunker().feed(framing)


def test_a_chunked_answer_has_ended_once_its_last_data_is_read_when_its_end_came_with_it() -> None:
    async def test() -> None:
        body = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nlast\r\n0\r\n\r\n"
        async with Server({"/c": raw(body), "/junk": raw(body + b"junk"), "/a": raw(answer(b"fine"))}) as server:
            client = Client()
            got = await client.request("POST", f"{server.url}/c", {}, b"", connect_timeout=5)
            assert await anext(got.aiter_bytes()) == b"last" and got.ended  # no second read to learn it
            await got.aclose()
            assert await read(client, f"{server.url}/junk") == (200, b"last")  # bytes past the end: not reused
            assert await read(client, f"{server.url}/a") == (200, b"fine")
            assert server.connections == 2
            await client.aclose()
    run(test)
