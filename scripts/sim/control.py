"""The control API under /_sim/ (JSON, no auth): every route calls the same-named SimState method."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .core import Reply, Req, json_reply
from .errors import Fail
from .util import dumps

if TYPE_CHECKING:
    from .state import SimState

ROUTES: dict[tuple[str, str], Callable[[SimState, dict[str, Any]], Any]] = {
    ("GET", "health"): lambda s, b: {"ok": True},
    ("POST", "google-accounts"): lambda s, b: s.add_google_account(**b),
    ("GET", "google-accounts"): lambda s, b: s.google_accounts(),
    ("POST", "api-keys"): lambda s, b: s.add_api_key(**b),
    ("GET", "api-keys"): lambda s, b: s.api_keys(),
    ("POST", "behave"): lambda s, b: {"id": s.behave(**b)},
    ("GET", "behave"): lambda s, b: s.rules(),
    ("DELETE", "behave"): lambda s, b: s.delete_rule(b["rule_id"]) if "rule_id" in b else s.clear_rules(),
    ("GET", "log"): lambda s, b: s.log(b.get("kind")),
    ("DELETE", "log"): lambda s, b: s.clear_log(),
    ("POST", "reset"): lambda s, b: s.reset(),
    ("GET", "settings"): lambda s, b: s.settings(),
    ("POST", "settings"): lambda s, b: s.settings(**b),
    ("POST", "revoke"): lambda s, b: s.revoke(**b),
    ("POST", "expire"): lambda s, b: s.expire(**b),
    ("POST", "auth-codes"): lambda s, b: s.add_auth_code(**b),
    ("POST", "quota"): lambda s, b: s.set_quota(**b),
}


def handle(state: SimState, req: Req) -> Reply:
    """One control call; a bad argument is a 400 with {"error": ...}, never a traceback."""
    parts = req.path[len("/_sim/"):].strip("/").split("/")
    route = ROUTES.get((req.method, parts[0]))
    try:
        if route is None:
            raise Fail(404, f"no control route {req.method} /_sim/{parts[0]}")
        body = req.json_object() if req.body.strip() else {}
        if len(parts) > 1:
            body["rule_id"] = parts[1]
        result = route(state, body) if req.method != "GET" else route(state, dict(req.query))
    except Fail as f:
        return Reply(f.status, dumps({"error": f.message}))
    except (TypeError, ValueError) as e:
        return Reply(400, dumps({"error": str(e)}))
    return json_reply({"ok": True} if result is None else result)
