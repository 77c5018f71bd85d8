"""Client keys: who may use the gateway, and that no key is ever shown in a flow."""

from __future__ import annotations

import hmac

from mitmproxy import http

from pool.accounts import mask

from . import answers, routes
from .settings import Settings

KEY_HEADERS = ("authorization", "x-api-key", "x-goog-api-key")
KEY_PARAM = "key"
OPEN_PATHS = {"/healthz", "/"}  # what all_except_health leaves open
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
    keys.extend(request.query.get_all(KEY_PARAM))
    return [k for k in keys if k]


def hide_keys(request: http.Request) -> None:
    """Masks client keys in the flow: mitmweb shows the request as the client sent it otherwise."""
    for name in KEY_HEADERS:
        values = request.headers.get_all(name)
        if values:
            request.headers.set_all(name, [_mask_header(v) for v in values])
    if KEY_PARAM in request.query:
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
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def request(self, flow: http.HTTPFlow) -> None:
        config = self.settings.config
        if config is None or flow.response is not None:
            return
        keys = presented_keys(flow.request)
        hide_keys(flow.request)
        mode = config.proxy.effective_auth_mode
        path = flow.request.path.partition("?")[0]
        if mode == "off" or (mode == "all_except_health" and path in OPEN_PATHS) or is_page(flow.request.method, path):
            return
        expected = config.proxy.api_key.encode()
        if any(hmac.compare_digest(key.encode(), expected) for key in keys):
            return
        headers = {k.lower(): v for k, v in flow.request.headers.items()}
        route = routes.classify(flow.request.method, flow.request.path, headers)
        protocol = route.protocol if route and route.protocol != "local" else routes.guess_protocol(path, headers)
        message = "invalid API key" if keys else "missing API key: send it as Authorization: Bearer <key>, x-api-key or x-goog-api-key"
        flow.response = answers.error(protocol, 401, message, kind="auth")
        flow.metadata["switchyard.outcome"] = "unauthorized"
