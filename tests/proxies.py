"""Two tiny outbound proxies for the tests, on loopback only: an HTTP proxy (absolute-form
requests and CONNECT) and a SOCKS5 proxy (RFC 1928, with RFC 1929 username/password), each
optionally asking for credentials and recording what went through it. Plain threads and
blocking sockets: small enough to read, and independent of the code under test."""

from __future__ import annotations

import base64
import select
import socket
import socketserver
import struct
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copies bytes both ways until either side closes."""
    sockets = [a, b]
    try:
        while True:
            readable, _, _ = select.select(sockets, [], [], 30)
            if not readable:
                return
            for s in readable:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    except OSError:
        return


@dataclass
class _Proxy:
    user: str | None = None
    password: str | None = None
    seen: list[str] = field(default_factory=list)  # "host:port" or "METHOD url" of what went through
    refused: int = 0  # attempts with missing or wrong credentials
    server: socketserver.ThreadingTCPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    def url(self, scheme: str) -> str:
        auth = f"{self.user}:{self.password}@" if self.user else ""
        return f"{scheme}://{auth}{LOOPBACK}:{self.port}"

    def start(self) -> "_Proxy":
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy.serve(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def serve(self, client: socket.socket) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class HttpProxy(_Proxy):
    def serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                return
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        headers = [line for line in header_lines if line]
        if self.user is not None:
            given = next((h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("proxy-authorization:")), "")
            wanted = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            if given != wanted:
                self.refused += 1
                client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n")
                return
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            self.seen.append(f"CONNECT {target}")
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
        else:
            parts = urlsplit(target)
            upstream = socket.create_connection((parts.hostname, parts.port or 80))
            self.seen.append(f"{method} {target}")
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            kept = [h for h in headers if not h.lower().startswith(("proxy-", "connection:", "keep-alive:"))]
            # One request per connection: the upstream closes after its answer, so does the client.
            upstream.sendall(f"{method} {path} {version}\r\n".encode("latin-1")
                             + "\r\n".join([*kept, "Connection: close"]).encode("latin-1") + b"\r\n\r\n" + rest)
        with upstream:
            _pipe(client, upstream)


class Socks5Proxy(_Proxy):
    def serve(self, client: socket.socket) -> None:
        def read(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = client.recv(n - len(data))
                if not chunk:
                    raise ConnectionError("client left")
                data += chunk
            return data

        try:
            version, count = read(2)
            methods = read(count)
            wanted = 0x02 if self.user is not None else 0x00
            if version != 5 or wanted not in methods:
                self.refused += 1
                client.sendall(b"\x05\xff")
                return
            client.sendall(bytes([5, wanted]))
            if wanted == 0x02:
                _, ulen = read(2)
                user = read(ulen).decode()
                (plen,) = read(1)
                password = read(plen).decode()
                if (user, password) != (self.user, self.password):
                    self.refused += 1
                    client.sendall(b"\x01\x01")
                    return
                client.sendall(b"\x01\x00")
            _, command, _, kind = read(4)
            if kind == 1:
                host = socket.inet_ntoa(read(4))
            elif kind == 3:
                (length,) = read(1)
                host = read(length).decode()
            else:
                host = socket.inet_ntop(socket.AF_INET6, read(16))
            (port,) = struct.unpack("!H", read(2))
            if command != 1:
                client.sendall(b"\x05\x07\x00\x01" + bytes(6))
                return
            upstream = socket.create_connection((host, port))
        except (ConnectionError, OSError, ValueError):
            return
        self.seen.append(f"{host}:{port}")
        client.sendall(b"\x05\x00\x00\x01" + bytes(6))
        with upstream:
            _pipe(client, upstream)


def dead_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]
