"""The dashboard, served by the gateway on its own port: the page under `/ui/` (files from
`addons/ui/`, no build step) and the JSON admin API under `/api/` (`api.py`), answered in the
`request` hook before the gateway sees the flow. The live event stream is the flow's response
with its body attached (`direct`), which mitmproxy streams like any upstream answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from mitmproxy import ctx, http

from pool import usagedb
from pool.config import Config

from . import api, bodies, direct
from .api import Answer, ApiError, Call
from .gateway import VERSION, Gateway
from .live import Live
from .settings import Settings

log = logging.getLogger("switchyard.dashboard")

UI_DIR = Path(__file__).resolve().parent / "ui"
PAGE, API = "/ui", "/api/"
MAX_BODY = 8 * 1024 * 1024  # an import file is the largest thing the page sends
# file suffix -> content type of the page's files
TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml", ".png": "image/png", ".txt": "text/plain; charset=utf-8",
}
# The page loads nothing from elsewhere and may not be framed; it never sends a referrer (its
# address may carry a sign-in's leftovers, and mitmweb links carry mitmweb's token).
PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
API_HEADERS = {"cache-control": "no-store", "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


@dataclass(frozen=True, slots=True)
class Asset:
    content: bytes
    content_type: str
    etag: str


class Dashboard:
    def __init__(self, settings: Settings, gateway: Gateway) -> None:
        self.settings = settings
        self.gateway = gateway
        self.started: Config | None = None
        self.api = api.Api(api.Context(
            settings=settings,
            pool=lambda: gateway.pool,
            ledger_file=lambda: usagedb.target(settings.home, settings.config),
            mitmweb=self.mitmweb,
            apply_config=self.apply_config,
            started=lambda: self.started,
            version=VERSION,
        ))
        self.live = Live(self.api.rows, self.api.fingerprint, lambda: usagedb.target(settings.home, settings.config), self.api.with_links)
        self._assets: dict[str, Asset] = {}

    # --- life cycle -----------------------------------------------------------------------------------
    def running(self) -> None:
        config = self.settings.config
        if config is None:
            return
        self.started = config
        host = "127.0.0.1" if config.proxy.listen_host == "0.0.0.0" else config.proxy.listen_host
        log.info("Switchyard dashboard at http://%s:%d%s/", host, config.proxy.port, PAGE)

    def done(self) -> None:
        self.live.close()

    def apply_config(self, config: Config) -> None:
        """Settings saved from the page: every addon and the pool read them from the next request."""
        self.settings.config = config
        if self.gateway.pool is not None:
            self.gateway.pool.reconfigure(config)

    def mitmweb(self) -> str | None:
        """mitmweb's address when it runs; with its token only when auth is on (then whoever
        reads this showed the admin key; without auth any local program could read it)."""
        url = getattr(ctx.master, "web_url", None) if ctx.master is not None else None
        if not isinstance(url, str):
            return None
        config = self.settings.config
        base, _, token = url.partition("?")
        if config is None or config.proxy.effective_auth_mode == "off" or not token:
            return base
        return f"{base}?{token}"

    # --- the hook ----------------------------------------------------------------------------------------
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or self.settings.config is None:
            return
        path = flow.request.path.partition("?")[0]
        if path == PAGE or path.startswith(PAGE + "/"):
            await self._page(flow, path)
        elif path.startswith(API):
            await self._api(flow, path)

    # --- the page ------------------------------------------------------------------------------------------
    async def _page(self, flow: http.HTTPFlow, path: str) -> None:
        if flow.request.method not in ("GET", "HEAD"):
            flow.response = _text(405, "the dashboard's page is read with GET")
        elif path == PAGE:
            flow.response = http.Response.make(301, b"", {"location": PAGE + "/", **PAGE_HEADERS})
        elif path == api.CALLBACK:
            await self._signed_in(flow)
        else:
            flow.response = self._asset(path.removeprefix(PAGE + "/") or "index.html", flow.request.headers.get("if-none-match"))

    def _asset(self, name: str, etag: str | None) -> http.Response:
        asset = self._assets.get(name) or self._read(name)
        if asset is None:
            return _text(404, f"no such page: {PAGE}/{name}")
        headers = {"content-type": asset.content_type, "etag": asset.etag, **PAGE_HEADERS}
        if etag == asset.etag:
            return http.Response.make(304, b"", headers)
        return http.Response.make(200, asset.content, headers)

    def _read(self, name: str) -> Asset | None:
        """A file of the page, kept after its first read; only plain names in addons/ui/."""
        if "/" in name or name.startswith(".") or Path(name).suffix not in TYPES:
            return None
        try:
            content = (UI_DIR / name).read_bytes()
        except OSError:
            return None
        asset = Asset(content, TYPES[Path(name).suffix], '"' + hashlib.sha256(content).hexdigest()[:16] + '"')
        self._assets[name] = asset
        return asset

    async def _signed_in(self, flow: http.HTTPFlow) -> None:
        """Google sends the browser back here: finish the sign-in, then back to the Accounts page."""
        query = dict(flow.request.query.items())
        raw = flow.request.path.partition("?")[2]
        account, problem = await self.api.finish_login(query, raw)
        if account is not None:
            where = {"signed_in": account.email or account.id, "id": account.id}
        else:
            where = {"login_error": problem or "the sign-in failed"}
        target = f"{PAGE}/#/accounts?{urlencode(where, quote_via=quote)}"
        flow.response = http.Response.make(302, b"", {"location": target, **PAGE_HEADERS})

    # --- the API ---------------------------------------------------------------------------------------------
    async def _api(self, flow: http.HTTPFlow, path: str) -> None:
        request = flow.request
        try:
            if path == api.EVENTS and request.method == "GET":
                await self._events(flow)
                return
            found = api.find(request.method, path)
            if found is None:
                raise ApiError(404, f"no such endpoint: {request.method} {path}")
            handler, params = found
            call = Call(params, dict(request.query.items()), _body(request), _reached(flow))
            answer = await handler(self.api, call)
        except ApiError as e:
            answer = Answer(e.body(), status=e.status)
        except usagedb.LedgerError as e:  # PostgreSQL away: the message names it, password masked
            answer = Answer(ApiError(503, str(e)).body(), status=503)
        except Exception as e:  # a bug must cost one answer, never the gateway
            log.exception("dashboard API failed")
            answer = Answer(ApiError(500, f"internal error ({type(e).__name__})").body(), status=500)
        flow.response = _response(answer)

    async def _events(self, flow: http.HTTPFlow) -> None:
        after = flow.request.query.get("after", "")
        body = self.live.stream(int(after) if after.isdigit() else None)
        headers = [("content-type", "text/event-stream; charset=utf-8"), *API_HEADERS.items()]
        await direct.answer(flow, 200, headers, body)


def _body(request: http.Request) -> Any:
    """The JSON body of a change ({} when empty). A change must say it is JSON: a page on
    another site cannot send that type without asking first (CORS)."""
    raw = request.raw_content or b""
    if request.method in ("GET", "DELETE") and not raw:
        return {}
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, "send the body as JSON with content-type: application/json")
    try:
        body = bodies.read(request, MAX_BODY)
    except bodies.BodyError as e:
        raise ApiError(e.status, e.message) from None
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the body is not valid JSON: {e}") from None


def _reached(flow: http.HTTPFlow) -> str:
    """The gateway's address as this caller reached it."""
    host, port = flow.client_conn.sockname[:2] if flow.client_conn.sockname else ("127.0.0.1", 8045)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def _response(answer: Answer) -> http.Response:
    if answer.content_type == "application/json":
        content = json.dumps(answer.body, separators=(",", ":"), ensure_ascii=False).encode()
    else:
        content = answer.body.encode() if isinstance(answer.body, str) else answer.body
    return http.Response.make(answer.status, content, {"content-type": answer.content_type, **API_HEADERS, **answer.headers})


def _text(status: int, text: str) -> http.Response:
    return http.Response.make(status, text.encode(), {"content-type": "text/plain; charset=utf-8", **PAGE_HEADERS})
