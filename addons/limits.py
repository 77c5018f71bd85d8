"""Keeps bad clients from hurting the gateway: the size of a request, the pace it arrives at, the
number of connections.

mitmproxy 12 bounds none of these (measured): a request head that never ends is buffered without
limit (300 MB of header: +300 MB of memory), a client sending a byte a second holds its
connection forever (`tcp_timeout` counts only silence), and connections are accepted until the
process runs out of file descriptors — then accepting fails and so do upstream calls. Its own
`body_size_limit` answers with an HTML page and only after reading what it refuses.

So each client connection is watched at the byte level: the watcher stands in for the
connection's reader, sees every byte before mitmproxy buffers it, and refuses with a complete
answer in the caller's protocol (then drops what else arrives, and closes):
- 431 for a request head over `max_header_kb`, 413 for a body over `max_body_mb`;
- 408 for a request whose head, or body, takes longer than `client_timeout` once begun;
- 503 (Retry-After) for a request on a connection beyond `max_connections`; past twice that,
  connections are closed at once;
- an idle connection is closed after `keepalive_timeout` (no request: no answer).
While the gateway works on a request no deadline runs: its own timeouts apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from typing import Any

from mitmproxy import connection, ctx, http
from mitmproxy.net.http.http1 import assemble_response

from pool.config import ProxyConfig

from . import answers, routes
from .guard import cors_headers
from .settings import Settings

log = logging.getLogger("switchyard.requests")

# After a refusal the connection is still read (and what comes dropped) until the client has been
# quiet this long, so that it reads the answer instead of a reset from a close mid-send; at most
# `client_timeout` for a declared body that is being sent anyway, LINGER otherwise.
LINGER = 1.0
END_OF_HEAD = b"\r\n\r\n"
CHUNK_FRAMING = 1.01  # chunked bodies are counted with their framing: allow for it
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d+)[ \t]*\r\n", re.IGNORECASE)
CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:[^\r\n]*chunked", re.IGNORECASE)
FDS_PER_CONNECTION = 5  # see ClientLimits.running
FDS_RESERVED = 128  # listeners, log files, the usage ledger, housekeeping calls


class Watcher:
    """One client connection, byte by byte; stands in for its asyncio reader."""

    def __init__(self, limits: ClientLimits, client: connection.Client, handler: Any, over_limit: bool) -> None:
        io = handler.transports[client]
        self._reader: asyncio.StreamReader = io.reader
        self._writer: asyncio.StreamWriter = io.writer
        self._io = io
        self._limits = limits
        self.over_limit = over_limit
        self.head = bytearray()  # the current request's head, so far
        self.request_head = b""  # the last complete one: a refusal during its body answers in its protocol
        self.in_body = False
        self.body_length: int | None = None  # declared; None: chunked
        self.body_seen = 0
        self.serving = False  # the gateway works on a request: no deadline of ours runs
        self.refused = False
        self._dropped_at = 0.0  # when the last byte after a refusal came
        self._linger_end = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._arm(self._proxy.keepalive_timeout, self._idle)

    @property
    def _proxy(self) -> ProxyConfig:
        config = self._limits.settings.config
        assert config is not None  # watchers exist only with a config
        return config.proxy

    # --- the reader mitmproxy sees -----------------------------------------------------------------
    async def read(self, n: int = -1) -> bytes:
        while True:
            data = await self._reader.read(n)
            if not self.refused and data:
                self._feed(data)
            if not self.refused or not data:
                return data
            self._dropped_at = asyncio.get_running_loop().time()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    # --- what the bytes say ------------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        if self.in_body:
            self.body_seen += len(data)
            if self.body_length is None and self.body_seen > self._proxy.max_body * CHUNK_FRAMING:
                self._refuse(413, f"request body is larger than {self._proxy.max_body_mb:g} MB", "request_too_large", self.request_head,
                             drain=self._proxy.client_timeout)
            return
        if not self.head:
            data = data.lstrip(b"\r\n")  # blank lines before a request are allowed
            if not data:
                return
            if not self.serving:
                self._arm(self._proxy.client_timeout, self._slow)
        start = max(len(self.head) - 3, 0)
        self.head += data
        end = self.head.find(END_OF_HEAD, start)
        if (end if end >= 0 else len(self.head)) > self._proxy.max_header_kb * 1024:
            self._refuse(431, f"request head is larger than {self._proxy.max_header_kb} KB", "request_too_large")
            return
        if end < 0:
            return
        rest = len(self.head) - end - len(END_OF_HEAD)
        head, self.head = bytes(self.head[: end + len(END_OF_HEAD)]), bytearray()
        self._head_done(head, rest)

    def _head_done(self, head: bytes, rest: int) -> None:
        if self.over_limit:
            self._refuse(503, "too many connections at once (see [proxy] max_connections); try again shortly", "overloaded", head,
                         retry_after=1, drain=self._proxy.client_timeout)
            return
        length = CONTENT_LENGTH.search(head)  # (a regex: the whole head is parsed only to refuse)
        self.body_length = int(length[1]) if length else None
        chunked = CHUNKED.search(head) is not None
        if self.body_length is not None and self.body_length > self._proxy.max_body:
            self._refuse(413, f"request body is larger than {self._proxy.max_body_mb:g} MB", "request_too_large", head,
                         drain=self._proxy.client_timeout)
            return
        self.request_head = head
        if chunked or self.body_length:
            self.in_body, self.body_seen = True, rest
            # A big body may take a while on a slow link: one more second per MB declared.
            self._arm(self._proxy.client_timeout + (self.body_length or 0) / 2**20, self._slow)
        elif not self.serving:
            self._arm(self._proxy.keepalive_timeout, self._idle)

    # --- what the gateway says -----------------------------------------------------------------------------
    def request_started(self) -> None:
        """The whole request is in: the gateway's own timeouts govern until it has answered.
        (Pipelined requests are not told apart: clients no longer send them.)"""
        self.serving, self.in_body, self.body_seen = True, False, 0
        self.disarm()

    def request_ended(self) -> None:
        self.serving = False
        if self.refused:
            return
        if self.head:
            self._arm(self._proxy.client_timeout, self._slow)
        else:
            self._arm(self._proxy.keepalive_timeout, self._idle)

    # --- deadlines and refusals --------------------------------------------------------------------------------
    def _arm(self, delay: float, then: Any) -> None:
        self.disarm()
        self._timer = asyncio.get_running_loop().call_later(delay, then)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle(self) -> None:
        self.close()

    def _slow(self) -> None:
        if not self.serving:
            seconds = self._proxy.client_timeout
            head = self.request_head if self.in_body else None
            self._refuse(408, f"the request did not arrive within client_timeout ({seconds:g} s)", "timeout", head)

    def _refuse(
        self,
        status: int,
        message: str,
        kind: str,
        head: bytes | None = None,
        *,
        retry_after: float | None = None,
        drain: float = LINGER,
    ) -> None:
        """Answers in the caller's protocol (as far as its head shows), then closes once the
        client is quiet; while a request is being answered no answer can go out: it only closes."""
        self.refused = True
        self.disarm()
        method, path, headers = parse_head(head if head is not None else bytes(self.head))
        log.info("refused a client (%s %s): %s (%d)", method or "-", path[:80] or "-", message, status)
        if not self.serving and not self._writer.is_closing():
            protocol = routes.caller_protocol(method, path, headers)
            response = answers.error(protocol, status, message, kind=kind, retry_after=retry_after)
            response.headers["connection"] = "close"
            origin = headers.get("origin", "").strip().lower()
            if origin in self._proxy.cors_origins:
                response.headers.update(cors_headers(origin))
            self._writer.write(assemble_response(response))
            loop = asyncio.get_running_loop()
            self._dropped_at, self._linger_end = loop.time(), loop.time() + drain
            self._timer = loop.call_later(LINGER, self._linger)
        else:
            self.close()

    def _linger(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._dropped_at >= LINGER or now >= self._linger_end:
            self.close()
        else:
            self._timer = asyncio.get_running_loop().call_later(min(LINGER, self._linger_end - now), self._linger)

    def close(self) -> None:
        self.disarm()
        task = self._io.handler
        if task is not None:
            task.cancel("closed by Switchyard")
        else:
            self._writer.close()


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Method, path and headers of a request head, complete or not, as far as they go."""
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    path = rest.partition(" ")[0]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip().lower(), value.strip())
    return method, path, headers


class ClientLimits:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.watchers: dict[str, Watcher] = {}
        self.most: int | None = None  # fewer than max_connections when file descriptors are short
        self._closed_at_once = 0
        self._said_at = -math.inf
        self._warned = False

    def running(self) -> None:
        """Each of max_connections is given five descriptors (a served connection holds the
        caller's and an upstream's, with room to spare; one waiting beyond the limit: its own):
        make room for them, or serve fewer."""
        if self.settings.config is None:
            return
        most = self.settings.config.proxy.max_connections
        limit = raise_file_limit(FDS_PER_CONNECTION * most + FDS_RESERVED)
        if limit is not None and limit < FDS_PER_CONNECTION * most + FDS_RESERVED:
            self.most = max((limit - FDS_RESERVED) // FDS_PER_CONNECTION, 1)
            log.warning(
                "only %d file descriptors: serving at most %d connections at once ([proxy] max_connections = %d); "
                "raise the limit (ulimit -n) to serve more", limit, self.most, most,
            )

    def client_connected(self, client: connection.Client) -> None:
        config = self.settings.config
        if config is None or client.transport_protocol != "tcp":
            return
        most = min(config.proxy.max_connections, self.most or config.proxy.max_connections)
        if len(self.watchers) >= 2 * most:
            client.error = "too many connections"
            self._closed_at_once += 1
            now = time.monotonic()
            if now - self._said_at >= 10:  # a flood of connections must not flood the log too
                log.info("closed %d new connection(s) at once: twice as many as are served at most (%d) are open", self._closed_at_once, most)
                self._closed_at_once, self._said_at = 0, now
            return
        server = ctx.master.addons.get("proxyserver")
        try:
            handler = server.connections[client.id]
            watcher = Watcher(self, client, handler, over_limit=len(self.watchers) >= most)
            handler.transports[client].reader = watcher
        except (AttributeError, KeyError) as e:  # another mitmproxy inside: serve, unwatched
            if not self._warned:
                self._warned = True
                log.warning("client limits are off: this mitmproxy's connections look different (%r)", e)
            return
        self.watchers[client.id] = watcher

    def client_disconnected(self, client: connection.Client) -> None:
        watcher = self.watchers.pop(client.id, None)
        if watcher is not None:
            watcher.disarm()

    def request(self, flow: http.HTTPFlow) -> None:
        watcher = self.watchers.get(flow.client_conn.id)
        if watcher is not None:
            watcher.request_started()

    def response(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def _ended(self, flow: http.HTTPFlow) -> None:
        watcher = self.watchers.get(flow.client_conn.id)
        if watcher is not None:
            watcher.request_ended()


def raise_file_limit(wanted: int) -> int | None:
    """Raises the soft open-files limit (often 1024 on Linux, 256 on macOS) towards `wanted`, as
    far as the hard limit lets; returns the limit now in force (None: unlimited or unknown)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return None if soft == resource.RLIM_INFINITY else soft
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        return new
    return soft
