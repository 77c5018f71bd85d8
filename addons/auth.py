"""Client keys: who may use the gateway, and that no key is ever shown in a flow."""

from __future__ import annotations

import hmac
import time

from mitmproxy import http

from pool.accounts import mask
from pool.keys import ClientKey

from . import answers, routes
from .clientkeys import CLIENT, Client, ClientKeys, admit_admin
from .settings import Settings

KEY_HEADERS = ("authorization", "x-api-key", "x-goog-api-key")
KEY_PARAM = "key"
OPEN_PATHS = {"/healthz", "/"}  # what all_except_health leaves open
UNCOUNTED = frozenset({"health", "models", "model"})  # what a client key's request limit does not count
PAGE = "/ui"  # the dashboard's page and assets, open in every mode: its data is under /api/, with the key


def presented_keys(request: http.Request) -> list[str]:
    """Every form a client may send its key in: Bearer, bare Authorization, x-api-key,
    x-goog-api-key, ?key=."""
    keys = []
    for name in KEY_HEADERS:
        for value in request.headers.get_all(name):
            if name == "authorization" and value[:7].lower() == "bearer ":
                value = value[7:]
            keys.append(value.strip())
    if "?" in request.path:  # parsing the query costs more than looking for one
        keys.extend(request.query.get_all(KEY_PARAM))
    return [k for k in keys if k]


def hide_keys(request: http.Request) -> None:
    """Masks client keys in the flow: mitmweb shows the request as the client sent it otherwise."""
    for name in KEY_HEADERS:
        values = request.headers.get_all(name)
        if values:
            request.headers.set_all(name, [_mask_header(v) for v in values])
    if "?" in request.path and KEY_PARAM in request.query:
        request.query.set_all(KEY_PARAM, [mask(v) for v in request.query.get_all(KEY_PARAM)])


def _mask_header(value: str) -> str:
    if value[:7].lower() == "bearer ":
        return value[:7] + mask(value[7:].strip())
    return mask(value.strip())


def is_page(method: str, path: str) -> bool:
    """The dashboard's page (it asks for the key itself) and Google's way back to it after a
    sign-in (bound to a sign-in begun with the key, by its state)."""
    return method in ("GET", "HEAD") and (path == PAGE or path.startswith(PAGE + "/"))


class ClientAuth:
    """The config's `api_key` is the admin key: everything. A client key (`switchyard keys`)
    reaches only the model API, within its limits; one is checked whenever it is presented.
    With client keys defined, `auth_mode = "auto"` wants a key on loopback too."""

    def __init__(self, settings: Settings, keys: ClientKeys | None = None) -> None:
        self.settings = settings
        self.keys = keys

    async def request(self, flow: http.HTTPFlow) -> None:
        config = self.settings.config
        if config is None:
            return
        keys = presented_keys(flow.request)
        hide_keys(flow.request)  # refused ones too: mitmweb shows every flow
        if flow.response is not None:
            return
        expected = config.proxy.api_key.encode()
        if expected and any(hmac.compare_digest(key.encode(), expected) for key in keys):
            admit_admin(flow)
            return
        if keys and self.keys is not None and (client := self.keys.find(keys)) is not None:
            await self._client(flow, client)
            return
        mode = config.proxy.effective_auth_mode
        if mode == "off" and config.proxy.auth_mode == "auto" and self.keys is not None and self.keys.defined():
            mode = "all_except_health"
        path = flow.request.path.partition("?")[0]
        if mode == "off" or (mode == "all_except_health" and path in OPEN_PATHS) or is_page(flow.request.method, path):
            return
        headers = {k.lower(): v for k, v in flow.request.headers.items()}
        protocol = routes.caller_protocol(flow.request.method, flow.request.path, headers)
        message = "invalid API key" if keys else "missing API key: send it as Authorization: Bearer <key>, x-api-key or x-goog-api-key"
        flow.response = answers.error(protocol, 401, message, kind="auth")
        flow.metadata["switchyard.outcome"] = "unauthorized"

    async def _client(self, flow: http.HTTPFlow, key: ClientKey) -> None:
        """A client key: known, so its label goes on the flow; then expiry, the model API
        only, and its limits, each refused in the caller's protocol."""
        assert self.keys is not None
        flow.metadata[CLIENT] = Client(key.id, key.label, tuple(key.models)).as_metadata()
        headers = {k.lower(): v for k, v in flow.request.headers.items()}
        route = routes.classify(flow.request.method, flow.request.path, headers)
        path = flow.request.path.partition("?")[0]
        protocol = route.protocol if route and route.protocol != "local" else routes.guess_protocol(path, headers)
        if not key.enabled or key.expired():
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(key.expires_at)) if key.expired() else ""
            message = f"this key expired on {when}" if when else "this key is disabled"
            flow.response = answers.error(protocol, 401, f"{message} ({key.label})", kind="auth")
        elif route is None or (route.protocol == "local" and route.operation != "health"):
            flow.response = answers.error(
                protocol, 403, f"client keys reach only the model API; {path} needs the admin key", kind="forbidden"
            )
        elif route.operation not in UNCOUNTED and (refusal := await self.keys.admit(key)) is not None:
            flow.response = answers.error(protocol, 429, refusal.message, kind="rate_limit", retry_after=refusal.retry_after)
