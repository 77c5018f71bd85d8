#!/usr/bin/env python3
"""simupstream: the simulated upstream behind Switchyard's demo, tests and benchmark.

One HTTP/1.1 port (stdlib asyncio + h11, nothing else) impersonates every upstream the gateway
talks to: Google OAuth (`/token`, `/userinfo`), Cloud Code `<prefix>/v1internal:<method>`
(Antigravity), the Gemini API (`/v1beta/models...`), OpenAI chat completions and Anthropic
messages. It checks what it is sent as strictly as the real services do (a gateway bug should
fail here, not in production), answers deterministically so tests can assert, and misbehaves
on request, per account, model or endpoint.

Run:     python scripts/simupstream.py [--host 127.0.0.1] [--port 0] [--demo]
Import:  sim = SimUpstream(); url = sim.start(); sim.add_api_key("k", "gemini"); ...; sim.stop()
Code:    the package scripts/sim/, one module per upstream (oauth, cloudcode, gemini_api, openai_api,
         anthropic_api) plus shared parts (gemini_body: the Gemini body both Google upstreams
         speak; errors: each dialect's error shape; rules: `behave`; control: /_sim/; state; server).

Control API (JSON, no auth); every route has a same-named method on SimUpstream:
  POST|GET /_sim/google-accounts   add_google_account(refresh_token, email, project, ...) / google_accounts()
  POST|GET /_sim/api-keys          add_api_key(key, kind, models) / api_keys()
  POST|GET|DELETE /_sim/behave     behave(action, match, times, **params) -> id / rules() / clear_rules()
  DELETE /_sim/behave/<id>         delete_rule(id)
  GET|DELETE /_sim/log             log(kind=None) / clear_log()
  GET|POST /_sim/settings          settings(**changes)  (chunk_delay, latency, events, client_id,
                                   client_secret, fragment, prefix_cache)
  POST /_sim/reset                 reset()
  POST /_sim/revoke  /_sim/expire  revoke(refresh_token) / expire(account)
  POST /_sim/auth-codes            add_auth_code(code, code_challenge, refresh_token, email, ...)
  POST /_sim/quota                 set_quota(account, model, remainingFraction, resetTime)
  GET /_sim/health

What the model says, in every dialect, from the last user turn: "echo: <text[:200]>" (with the
setting echo_last_part: of its last text part only);
"[[call NAME {json}]]" with a declared tool NAME -> a tool call; a tool-result turn ->
"tool result: <result>"; "[[think]]" (or thinking requested) -> a thought first; images ->
"image: <mime> <n> bytes". Tokens: ceil(chars / 4) + 1 (see estimate_tokens).
Thought signatures are checked as the real services do: Google's (v1internal and the Gemini API,
compared as bytes, so either base64 alphabet) and Anthropic's each accept only their own.

Rules (`behave`): checked in the order added, the first match with times left applies. Match
keys: account (refresh token, email or key), model, endpoint (path prefix), path (substring),
kind. Housekeeping calls (loadCodeAssist, fetchAvailableModels, model lists) match only rules
that name an endpoint or path, and OAuth calls only rules with kind "oauth", so a "429 for this
account" rule hits generation and nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the `sim` package lives next to this file, however it is run or imported
    sys.path.insert(0, _HERE)

from sim.core import Reply, Req  # noqa: E402
from sim.defaults import DEFAULT_GOOGLE_MODELS, DEFAULT_KEY_MODELS, DEFAULT_SETTINGS, DEMO  # noqa: E402
from sim.errors import Fail, error_body  # noqa: E402
from sim.server import SimUpstream, main  # noqa: E402
from sim.state import SimState  # noqa: E402
from sim.util import BYPASS_SIGNATURE, THINKING_TEXT, estimate_tokens, mask  # noqa: E402

__all__ = ["BYPASS_SIGNATURE", "DEFAULT_GOOGLE_MODELS", "DEFAULT_KEY_MODELS", "DEFAULT_SETTINGS", "DEMO", "THINKING_TEXT",
           "Fail", "Reply", "Req", "SimState", "SimUpstream", "error_body", "estimate_tokens", "main", "mask"]

if __name__ == "__main__":
    sys.exit(main())
