"""The sim's HTTP/1.1 server (stdlib asyncio + h11): keep-alive, chunked streams paced and broken
on request, 400 on malformed HTTP; and the command line."""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import socket
import struct
import threading
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

from .core import Reply, Req
from .defaults import DEMO
from .state import SimState
from .util import dumps

MAX_BODY = 64 * 1024 * 1024


class SimUpstream(SimState):
    """The simulator plus its HTTP/1.1 server (keep-alive, chunked streams, 400 on garbage).

    `start()` serves on a private event loop in a daemon thread (for sync tests and tools);
    `serve()` serves on the caller's loop (for the CLI)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, demo: bool = False) -> None:
        super().__init__()
        self.host, self.port = host, port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        if demo:
            self.add_demo_accounts()

    def add_demo_accounts(self) -> None:
        """The accounts in DEMO, so the demo gateway has one of every kind to route to."""
        for g in DEMO["google"]:
            self.add_google_account(**g)
        for k in DEMO["keys"]:
            self.add_api_key(**k)

    # ----------------------------------------------------------------- lifecycle

    async def serve(self) -> str:
        """Starts listening on the running loop; returns the base URL."""
        self._server = await asyncio.start_server(self._connection, self.host, self.port)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.port = port
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        return self.url

    async def aclose(self) -> None:
        """Stops serve(): closes the listener and cancels every connection (stalls included)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def start(self) -> str:
        """Serves on a private loop in a daemon thread; returns the base URL."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.serve())
            except BaseException as e:  # surface bind errors in the caller's thread
                failure.append(e)
                loop.close()
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.aclose())
            loop.close()

        self._thread = threading.Thread(target=run, name="simupstream", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self.url

    def stop(self) -> None:
        """Stops the thread started by start(): open and stalled connections are cut."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = self._thread = None

    def __enter__(self) -> SimUpstream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- one connection

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                try:
                    req = await self._read_request(conn, reader, writer)
                except h11.RemoteProtocolError as e:
                    self._refuse(conn, writer, e.error_status_hint, f"bad request: {e}")
                    break
                except _TooLarge:
                    self._refuse(conn, writer, 413, "request body too large")
                    break
                if req is None:
                    break
                reply = self.handle(req)
                if not await self._send(conn, reader, writer, reply):
                    break
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, asyncio.IncompleteReadError, h11.LocalProtocolError, h11.RemoteProtocolError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            writer.close()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> Req | None:
        head: h11.Request | None = None
        body: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                head = event
                if conn.client_is_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise _TooLarge
                body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = head.target.decode("latin-1")
                split = urlsplit(target)
                return Req(head.method.decode("ascii", "replace"), unquote(split.path),
                           dict(parse_qsl(split.query)),
                           {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers},
                           b"".join(body))
            else:  # ConnectionClosed or PAUSED
                return None

    @staticmethod
    def _refuse(conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = dumps({"error": message})
        try:
            writer.write(conn.send(h11.Response(status_code=status, headers=[
                ("content-type", "application/json"), ("content-length", str(len(body))), ("connection", "close")])))
            writer.write(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            pass

    async def _send(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    reply: Reply) -> bool:
        """Writes one reply with its timing and misbehaviour; False when the connection must end."""
        if reply.latency:
            await asyncio.sleep(reply.latency)
        if reply.stall is not None and reply.hold_at is None and await self._hold(conn, reader, reply.stall):
            return False
        if reply.drop_after == 0:
            return False
        headers = [("content-type", reply.ctype), ("server", "simupstream"), *reply.headers]
        if reply.events is None:
            headers.append(("content-length", str(len(reply.body))))
            writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
            if await self._interrupt(conn, reader, writer, reply, 0):
                return False
            writer.write((conn.send(h11.Data(data=reply.body)) if reply.body else b"") + conn.send(h11.EndOfMessage()))
            await writer.drain()
            return True
        headers.append(("cache-control", "no-cache"))
        head = conn.send(h11.Response(status_code=reply.status, headers=headers))
        fragment = self.conf["fragment"]
        broken = reply.drop_after is not None or reply.hold_at is not None or reply.reset_at is not None
        if not reply.chunk_delay and not fragment and not broken:
            # Nothing to pace: one write (the benchmark baseline should cost the least it can).
            body = b"".join(conn.send(h11.Data(data=e)) for e in reply.events)
            writer.write(head + body + conn.send(h11.EndOfMessage()))
            await writer.drain()
            return True
        writer.write(head)
        for i, event in enumerate(reply.events):
            if i and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            if await self._interrupt(conn, reader, writer, reply, i):
                return False
            if fragment and len(event) > 1:
                half = len(event) // 2
                writer.write(conn.send(h11.Data(data=event[:half])))
                await writer.drain()
                event = event[half:]
            writer.write(conn.send(h11.Data(data=event)))
            if reply.chunk_delay or fragment:
                await writer.drain()
        ending = len(reply.events)
        if reply.chunk_delay and ending in (reply.hold_at, reply.reset_at, reply.drop_after):
            await asyncio.sleep(reply.chunk_delay)  # a misbehaviour after the last event comes at the same pace
        if await self._interrupt(conn, reader, writer, reply, ending):
            return False
        await writer.drain()
        if reply.drop_after is not None:
            return False  # asked to drop after more events than there were: still no terminator
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return True

    async def _interrupt(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         reply: Reply, sent: int) -> bool:
        """The misbehaviour due once `sent` events (of a whole body: none) are out; True when the
        connection ends here: closed (drop), reset, or left by the client during a hold."""
        if reply.drop_after is not None and sent >= reply.drop_after:
            await writer.drain()
            return True  # closing now leaves the chunked body without its terminator
        if reply.reset_at == sent:
            await writer.drain()
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # with a zero linger: a TCP reset, not a close
            return True
        if reply.hold_at == sent:
            await writer.drain()
            return await self._hold(conn, reader, reply.stall if reply.stall is not None else math.inf)
        return False

    @staticmethod
    async def _hold(conn: h11.Connection, reader: asyncio.StreamReader, seconds: float) -> bool:
        """Waits `seconds` (inf: forever) unless the client leaves first; True when it left."""
        async def watch() -> bool:
            while data := await reader.read(65536):
                conn.receive_data(data)  # a pipelined request: keep it for the next cycle
            return True
        try:
            return await asyncio.wait_for(watch(), None if seconds == math.inf else seconds)
        except TimeoutError:
            return False


class _TooLarge(Exception):
    pass


# --------------------------------------------------------------------------- CLI


async def _main_async(host: str, port: int, demo: bool) -> None:
    sim = SimUpstream(host, port, demo=demo)
    url = await sim.serve()
    print(f"simupstream listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not on the main thread / platform
            pass
    await stop.wait()
    await sim.aclose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Switchyard's simulated upstream (OAuth, v1internal, Gemini, OpenAI, "
                                             "Anthropic).")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    ap.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    ap.add_argument("--demo", action="store_true", help="pre-register the demo accounts (see DEMO)")
    args = ap.parse_args(argv)
    try:
        asyncio.run(_main_async(args.host, args.port, args.demo))
    except KeyboardInterrupt:
        pass
    return 0
