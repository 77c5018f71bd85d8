"""Keeps web pages out: the gateway serves the user's tools, not whatever site the user has open.

Without a key (the loopback default) any page could POST to http://127.0.0.1:8045 — a text/plain
or form body needs no CORS preflight — and spend the user's quota; a DNS-rebinding page (its own
name resolving to 127.0.0.1) could even read the answers. Three checks, in every auth mode and
before any other work, stop both:
- Host: only the loopback names for the port the caller reached, and `[proxy] allowed_hosts`.
- Origin: a browser's request is served only for the gateway's own origin and `[proxy]
  cors_origins`; those get CORS answers (preflights included), so a page the user trusts works.
- Body type: a POST must declare JSON (or what its protocol defines, e.g. multipart for image
  edits) — a type no page can send to another origin without a preflight.
"""

from __future__ import annotations

import logging
import re

from mitmproxy import ctx, http

from pool.config import ProxyConfig

from . import answers, routes
from .settings import Settings

log = logging.getLogger("switchyard")

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
CALLER_HOST = "switchyard.host"  # flow.metadata: the Host the caller sent, for the record

# POST bodies a protocol defines besides JSON, by path; every other POST must be JSON.
OTHER_BODY_TYPES: list[tuple[re.Pattern[str], frozenset[str]]] = [
    (re.compile(r"(?:/v1)?/images/edits"), frozenset({"multipart/form-data"})),
]

# What a listed origin's pages may send: the headers the official SDKs set, by name or prefix.
CORS_HEADERS = frozenset({
    "authorization", "content-type", "accept", "x-api-key", "x-goog-api-key", "idempotency-key",
})
CORS_HEADER_PREFIXES = ("x-stainless-", "anthropic-", "openai-", "x-goog-")
CORS_METHODS = "GET, POST, OPTIONS"
CORS_EXPOSED = "x-switchyard-account, x-switchyard-model, retry-after"
CORS_MAX_AGE = "600"


def split_host(host: str) -> tuple[str, int | None]:
    """`name[:port]` (the name may be a bracketed IPv6 address) as name and port; a port that is
    not a number reads as -1, which matches nothing."""
    name, sep, port = host.rpartition(":") if not host.endswith("]") else ("", "", "")
    if not sep:
        return host, None
    return name, int(port) if port.isdigit() else -1


def host_allowed(host: str, port: int, allowed: list[str]) -> bool:
    """A loopback name for the port the caller reached, or an `allowed_hosts` entry ("name" for
    any port, "name:port" exactly)."""
    host = host.strip().lower()
    name, asked_port = split_host(host)
    if name in LOOPBACK_NAMES and asked_port in (None, port):
        return True
    return host in allowed or name in allowed


def cors_origin(request: http.Request, proxy: ProxyConfig) -> str | None:
    """The request's Origin when it is one `cors_origins` lists: it gets CORS headers."""
    origin = request.headers.get("origin", "").strip().lower()
    return origin if origin in proxy.cors_origins else None


def cors_headers(origin: str) -> dict[str, str]:
    return {"access-control-allow-origin": origin, "access-control-expose-headers": CORS_EXPOSED, "vary": "Origin"}


def json_type(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.endswith("+json") and "/" in media)


def body_type_allowed(path: str, content_type: str) -> bool:
    if json_type(content_type):
        return True
    media = content_type.partition(";")[0].strip().lower()
    return any(pattern.fullmatch(path) and media in types for pattern, types in OTHER_BODY_TYPES)


class BrowserGuard:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def running(self) -> None:
        self._keep_host()
        config = self.settings.config
        if config is not None and config.proxy.allow_lan_access and not config.proxy.allowed_hosts:
            log.warning(
                "LAN access is on but [proxy] allowed_hosts is empty: clients on the LAN that call "
                "this machine by its address or name are refused until you list it there"
            )

    def configure(self, updated: set[str]) -> None:
        if "keep_host_header" in updated:
            self._keep_host()

    @staticmethod
    def _keep_host() -> None:
        """In reverse mode mitmproxy replaces the Host header with the reverse target's unless
        this is on; the Host check needs the caller's (nothing is ever forwarded to the target)."""
        if "keep_host_header" in ctx.options and not ctx.options.keep_host_header:
            ctx.options.update(keep_host_header=True)

    def request(self, flow: http.HTTPFlow) -> None:
        config = self.settings.config
        if config is None or flow.response is not None:
            return
        proxy = config.proxy
        request = flow.request
        path = request.path.partition("?")[0]
        host = request.host_header or ""
        flow.metadata[CALLER_HOST] = host
        port = flow.client_conn.sockname[1] if flow.client_conn.sockname else proxy.port
        if not host_allowed(host, port, proxy.allowed_hosts):
            shown = host[:100] or "(none)"
            self._refuse(flow, 421, f"host {shown!r} is not served here; add it to [proxy] allowed_hosts if it is yours", "misdirected")
            return
        origins = [o.strip().lower() for o in request.headers.get_all("origin")]
        own = f"http://{host.strip().lower()}"
        for origin in origins:
            if origin != own and origin not in proxy.cors_origins:
                self._refuse(flow, 403, f"origin {origin[:100]!r} may not call the gateway; add it to [proxy] cors_origins if you trust it", "forbidden")
                return
        if request.method == "OPTIONS" and origins:
            flow.response = http.Response.make(204, b"", self._preflight(request))
            return
        if request.method == "POST" and not body_type_allowed(path, request.headers.get("content-type", "")):
            got = request.headers.get("content-type", "none")[:100]
            self._refuse(flow, 415, f"the request body must be JSON: send content-type: application/json (got {got!r})", "unsupported_media_type")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Every answer to a listed origin carries CORS headers, streams included (headers set
        here go out after this hook)."""
        config = self.settings.config
        if config is None or flow.response is None:
            return
        origin = cors_origin(flow.request, config.proxy)
        if origin is not None:
            flow.response.headers.update(cors_headers(origin))

    @staticmethod
    def _preflight(request: http.Request) -> dict[str, str]:
        asked = [h.strip().lower() for h in request.headers.get("access-control-request-headers", "").split(",")]
        allowed = [h for h in asked if h in CORS_HEADERS or h.startswith(CORS_HEADER_PREFIXES)]
        headers = {
            "access-control-allow-methods": CORS_METHODS,
            "access-control-allow-headers": ", ".join(allowed),
            "access-control-max-age": CORS_MAX_AGE,
        }
        if request.headers.get("access-control-request-private-network", "").lower() == "true":
            headers["access-control-allow-private-network"] = "true"  # a listed public site calling loopback
        return headers

    @staticmethod
    def _refuse(flow: http.HTTPFlow, status: int, message: str, kind: str) -> None:
        headers = {k.lower(): v for k, v in flow.request.headers.items()}
        protocol = routes.caller_protocol(flow.request.method, flow.request.path, headers)
        flow.response = answers.error(protocol, status, message, kind=kind)
