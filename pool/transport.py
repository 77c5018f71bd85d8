"""The gateway's HTTP client for upstreams: one connection pool, bodies read as they arrive.

Built on aiohttp rather than httpx: an upstream exchange is the gateway's hottest path, and on
these machines httpx spent about 4.6 ms of CPU per request where aiohttp (whose HTTP parser is
C) spent about 1.2 ms — more than the whole latency budget the gateway may add. Everything in
the pool goes through `Transport`, so this is the one place that knows the library.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

CONNECT_TIMEOUT = 10.0
CHUNK = 64 * 1024


class TransportError(Exception):
    """The exchange broke on the way (connect, TLS, reset, timeout); the message says how."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


def _error(exc: BaseException) -> TransportError:
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return TransportError(f"timed out ({type(exc).__name__})", timeout=True)
    detail = str(exc) or type(exc).__name__
    return TransportError(f"{type(exc).__name__}: {detail}")


class Response:
    """An answer whose status and headers are in; the body is read on demand."""

    __slots__ = ("_raw",)

    def __init__(self, raw: aiohttp.ClientResponse) -> None:
        self._raw = raw

    @property
    def status_code(self) -> int:
        return self._raw.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._raw.headers  # case-insensitive

    async def aread(self) -> bytes:
        try:
            return await self._raw.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise _error(e) from None

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._raw.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise _error(e) from None

    async def aclose(self) -> None:
        """Back to the pool when the body was read to its end, closed otherwise."""
        if self._raw.content.at_eof():
            self._raw.release()
        else:
            self._raw.close()


class Transport:
    """A shared pool of upstream connections; create it inside the event loop that uses it."""

    def __init__(self, *, limit: int = 512) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        # HTTPS_PROXY, NO_PROXY and friends, read once: aiohttp's own trust_env re-reads them
        # (and .netrc) in a worker thread on every request, which cost more than the request.
        self._env_proxies = urllib.request.getproxies()
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _proxy(self, url: str) -> str | None:
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        if key not in self._proxies:
            proxy = self._env_proxies.get(parts.scheme) or self._env_proxies.get("all")
            if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
                proxy = None
            self._proxies[key] = proxy
        return self._proxies[key]

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        form: Mapping[str, str] | None = None,
        json: Any = None,
        timeout: float = 60.0,
    ) -> Response:
        """Sends a request and returns once the status and headers are in (within `timeout`)."""
        data: Any = content if content is not None else dict(form) if form is not None else None
        try:
            async with asyncio.timeout(timeout):
                raw = await self._open().request(
                    method, url, headers=dict(headers or {}), data=data, json=json, allow_redirects=False,
                    proxy=self._proxy(url),
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(CONNECT_TIMEOUT, timeout)),
                )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
            raise _error(e) from None
        return Response(raw)

    async def fetch(self, method: str, url: str, *, timeout: float = 30.0, **options: Any) -> tuple[Response, bytes]:
        """A whole exchange for small bodies (OAuth, housekeeping calls)."""
        try:
            async with asyncio.timeout(timeout):
                response = await self.request(method, url, timeout=timeout, **options)
                try:
                    body = await response.aread()
                finally:
                    await response.aclose()
        except TimeoutError as e:
            raise _error(e) from None
        return response, body

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "Transport":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
