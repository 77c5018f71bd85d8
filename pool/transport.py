"""The gateway's HTTP client for upstreams: connection pools, bodies read as they arrive.

An upstream exchange is the gateway's hottest path. Direct routes go through the small
HTTP/1.1 client of `http1.py` (about 0.3 ms less per exchange than aiohttp, which spent about
1.2 ms of CPU per request where httpx spent 4.6 ms); proxied routes go through aiohttp, which
speaks to HTTP and SOCKS proxies. Everything in the pool goes through `Transport`, so this is
the one place that knows the libraries.

Outbound proxies, most specific first: an account's own (`accounts ... --proxy`), then
`[network] proxy`, then the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`). A host that
`NO_PROXY` names is always reached directly. HTTP(S) proxies share the one connection pool
(aiohttp keys its connections by proxy); each SOCKS proxy gets a pool of its own, through
aiohttp-socks. A failure on a proxied exchange names the proxy, its credentials masked.
"""

from __future__ import annotations

import asyncio
import copy
import json as jsonlib
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp_socks import ProxyConnectionError, ProxyConnector, ProxyError, ProxyTimeoutError

from . import http1
from .http1 import TransportError

CONNECT_TIMEOUT = 10.0
CHUNK = 64 * 1024
DIRECT = "direct"  # as a proxy setting: no proxy at all, whatever the config or environment says
PROXY_SCHEMES = ("http", "https", "socks4", "socks5", "socks5h")
SOCKS_SCHEMES = ("socks4", "socks5", "socks5h")
SOCKS_ERRORS = (ProxyConnectionError, ProxyError, ProxyTimeoutError)  # aiohttp-socks' own, not OSError


def check_proxy(url: str) -> str:
    """A proxy setting as given, or ValueError saying what is wrong with it."""
    if url == DIRECT:
        return url
    parts = urlsplit(url)
    if parts.scheme not in PROXY_SCHEMES:
        raise ValueError(f"{mask_proxy(url)!r} is not a proxy URL: use http://, https://, socks5://, socks5h:// or socks4://HOST:PORT, or \"direct\"")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ValueError(f"{mask_proxy(url)!r} needs a host and a port")
    if parts.path.strip("/") or parts.query:
        raise ValueError(f"{mask_proxy(url)!r}: a proxy URL has no path")
    return url


def mask_proxy(url: str | None) -> str | None:
    """The proxy URL with its credentials hidden, for messages, lists and logs."""
    if not url or "@" not in url:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def _error(exc: BaseException) -> TransportError:
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError | ProxyTimeoutError):
        return TransportError(f"timed out ({type(exc).__name__})", timeout=True)
    detail = str(exc) or type(exc).__name__
    return TransportError(f"{type(exc).__name__}: {detail}")


class Response(Protocol):
    """An answer whose status and headers are in; the body is read on demand. Reads raise
    `TransportError` when the exchange breaks."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # case-insensitive

    async def aread(self) -> bytes: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    @property
    def ended(self) -> bool: ...  # the whole body is in and read

    async def aclose(self) -> None: ...  # back to the pool when read to its end, closed otherwise


class _Proxied:
    """A `Response` that came through aiohttp."""

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

    @property
    def ended(self) -> bool:
        """Whether the whole body is in and read: a further read returns at once, with nothing."""
        return self._raw.content.at_eof()

    async def aclose(self) -> None:
        """Back to the pool when the body was read to its end, closed otherwise."""
        if self._raw.content.at_eof():
            self._raw.release()
        else:
            self._raw.close()


def _scrub(message: str, proxy: str) -> str:
    """A library's message without the proxy's credentials, should it quote them."""
    parts = urlsplit(proxy)
    for secret in (parts.password, parts.username):
        if secret:
            message = message.replace(secret, "***")
    return message


class _Sessions:
    """The connection pools a Transport and its views share: the small client for direct routes,
    one aiohttp session for HTTP proxies (named per request), one per SOCKS proxy."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.by_proxy: dict[str | None, aiohttp.ClientSession] = {}
        self._direct: http1.Client | None = None

    def direct(self) -> http1.Client:
        if self._direct is None or self._direct.closed:
            self._direct = http1.Client(self.limit)
        return self._direct

    def get(self, socks: str | None) -> aiohttp.ClientSession:
        session = self.by_proxy.get(socks)
        if session is None or session.closed:
            if socks is None:
                connector: aiohttp.BaseConnector = aiohttp.TCPConnector(limit=self.limit, ttl_dns_cache=300)
            else:  # python-socks spells remote DNS as rdns, not as the socks5h scheme
                remote_dns = socks.startswith("socks5h:")
                connector = ProxyConnector.from_url(socks.replace("socks5h:", "socks5:", 1), rdns=remote_dns or None, limit=self.limit)
            session = self.by_proxy[socks] = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
                skip_auto_headers=("User-Agent",),
            )
        return session

    async def aclose(self) -> None:
        sessions, self.by_proxy = list(self.by_proxy.values()), {}
        for session in sessions:
            await session.close()
        if self._direct is not None:
            await self._direct.aclose()


class Transport:
    """A shared pool of upstream connections; create it inside the event loop that uses it.
    `proxy` is `[network] proxy` (None: the environment's); `via` gives an account's view."""

    def __init__(self, *, limit: int = 512, proxy: str | None = None) -> None:
        self._sessions = _Sessions(limit)
        self._proxy_setting = check_proxy(proxy) if proxy else None
        # HTTPS_PROXY, NO_PROXY and friends, read once: aiohttp's own trust_env re-reads them
        # (and .netrc) in a worker thread on every request, which cost more than the request.
        self._env_proxies = urllib.request.getproxies()
        self._proxies: dict[tuple[str, str, str | None], str | None] = {}

    def via(self, proxy: str | None) -> "Transport":
        """This transport as one account sees it: through `proxy` (None: the default route),
        on the same connection pools."""
        if not proxy:
            return self
        view = copy.copy(self)
        view._proxy_setting = check_proxy(proxy)
        return view

    def proxy_for(self, url: str) -> str | None:
        """The proxy a request to `url` goes through, or None for a direct connection."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "", self._proxy_setting)
        if key not in self._proxies:
            proxy = self._proxy_setting or self._env_proxies.get(parts.scheme) or self._env_proxies.get("all")
            if proxy == DIRECT or (proxy and urllib.request.proxy_bypass_environment(parts.hostname or "", self._env_proxies)):
                proxy = None
            self._proxies[key] = proxy
        return self._proxies[key]

    def _open(self, proxy: str | None) -> tuple[aiohttp.ClientSession, str | None]:
        """The session for a route, and the `proxy=` aiohttp needs on it (HTTP proxies only)."""
        if proxy is not None and urlsplit(proxy).scheme in SOCKS_SCHEMES:
            return self._sessions.get(proxy), None
        return self._sessions.get(None), proxy

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
        route = self.proxy_for(url)
        if route is None:
            return await self._direct(method, url, headers or {}, content, form, json, timeout)
        data: Any = content if content is not None else dict(form) if form is not None else None
        session, http_proxy = self._open(route)
        try:
            async with asyncio.timeout(timeout):
                raw = await session.request(
                    method, url, headers=dict(headers or {}), data=data, json=json, allow_redirects=False,
                    proxy=http_proxy,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(CONNECT_TIMEOUT, timeout)),
                )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, *SOCKS_ERRORS) as e:
            error = _error(e)
            raise TransportError(f"{_scrub(str(error), route)} (through proxy {mask_proxy(route)})", timeout=error.timeout) from None
        return _Proxied(raw)

    async def _direct(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes | None, form: Mapping[str, str] | None,
        json: Any, timeout: float,
    ) -> Response:
        sent = dict(headers)
        given = {name.lower() for name in sent}
        if content is not None:
            body, kind = content, "application/octet-stream"
        elif form is not None:
            body, kind = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
        elif json is not None:
            body, kind = jsonlib.dumps(json).encode(), "application/json"
        else:
            body, kind = b"", None
        if kind is not None and "content-type" not in given:
            sent["content-type"] = kind
        try:
            async with asyncio.timeout(timeout):
                return await self._sessions.direct().request(method, url, sent, body, connect_timeout=min(CONNECT_TIMEOUT, timeout))
        except TimeoutError:
            raise TransportError("timed out (no answer's headers in time)", timeout=True) from None

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
        await self._sessions.aclose()

    async def __aenter__(self) -> "Transport":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
