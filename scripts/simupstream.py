#!/usr/bin/env python3
"""simupstream: the simulated upstream behind Switchyard's demo, tests and benchmark.

One HTTP/1.1 port (stdlib asyncio + h11, nothing else) impersonates every upstream the gateway
talks to: Google OAuth (`/token`, `/userinfo`, the sign-in page `/o/oauth2/v2/auth`, where the
user names an email), Cloud Code `<prefix>/v1internal:<method>` (Antigravity), the Gemini API
(`/v1beta/models...`), OpenAI chat completions and Anthropic messages. It checks what it is
sent as strictly as the real services do (a gateway bug should fail here, not in production),
answers deterministically so tests can assert, and misbehaves on request, per account, model or
endpoint.

Run:     python scripts/simupstream.py [--host 127.0.0.1] [--port 0] [--demo]
Import:  sim = SimUpstream(); url = sim.start(); sim.add_api_key("k", "gemini"); ...; sim.stop()
Code:    the package scripts/sim/, one module per upstream (oauth, cloudcode, gemini_api, openai_api with
         openai_embeddings and openai_images, anthropic_api) plus shared parts: catalogue (Cloud Code's models), claude (Cloud Code's
         rules for claude-*), gemini_body (the Gemini body both Google upstreams speak),
         refusals (the table of Google's refusals: rule -> status, RPC status, reason, message),
         errors (each dialect's error shape), rules (`behave`), control (/_sim/), state, server.

Control API (JSON, no auth); every route has a same-named method on SimUpstream:
  POST|GET /_sim/google-accounts   add_google_account(refresh_token, email, project, access_token_ttl,
                                   models, onboarded, onboard_polls) / google_accounts()
  POST|GET /_sim/api-keys          add_api_key(key, kind, models) / api_keys()
  POST|GET|DELETE /_sim/behave     behave(action, match, times, **params) -> id / rules() / clear_rules()
  DELETE /_sim/behave/<id>         delete_rule(id)
  GET|DELETE /_sim/log             log(kind=None) / clear_log()
  GET|POST /_sim/settings          settings(**changes)  (chunk_delay, latency, events, client_id,
                                   client_secret, fragment, prefix_cache, echo_last_part,
                                   min_client_version, outdated_reply)
  POST /_sim/reset                 reset()
  POST /_sim/revoke  /_sim/expire  revoke(refresh_token) / expire(account)
  POST /_sim/auth-codes            add_auth_code(code, code_challenge, refresh_token, email, ...)
  POST /_sim/quota                 set_quota(account, model, remainingFraction, resetTime)
  GET /_sim/health
Log entries: t, kind, account (email or masked key), path, model, stream, status (0: no answer),
action (the rule applied), session (Cloud Code generation's request.sessionId), request_type
(Cloud Code generation's requestType).

What the model says, in every dialect, from the last user turn: "echo: <text[:200]>" (with the
setting echo_last_part: of its last text part only);
"[[call NAME {json}]]" with a declared tool NAME -> a tool call; a tool-result turn ->
"tool result: <result>"; "[[think]]" (or thinking requested) -> a thought first; images ->
"image: <mime> <n> bytes". Tokens: ceil(chars / 4) + 1 (see estimate_tokens).
"[[search QUERY]]" with a search tool at hand (Google's googleSearch, Anthropic's web_search server
tool, an OpenAI *-search-* model) searches: the answer is util.search_answer(QUERY), grounded in
util.search_hits(QUERY) (three pages, the same for the same query) as each service reports it -
Google: candidate.groundingMetadata on the last event (webSearchQueries, groundingChunks with
grounding-api-redirect links titled by domain, groundingSupports with UTF-8 byte offsets, a zero
startIndex left out); Anthropic: server_tool_use, web_search_tool_result, then text blocks with
web_search_result_location citations (citations_delta when streamed), usage.server_tool_use;
OpenAI: url_citation annotations (a delta of their own when streamed). Image models (*-image*)
answer "image of: <text>" plus a real PNG (util.image_for: colour from the text, shape from the
aspect ratio, long side 64/128/256 px for 1K/2K/4K) as inlineData, with IMAGE tokens in
usageMetadata.candidatesTokensDetails.
Thought signatures belong to a model family and are accepted only by it (compared as bytes, so
either base64 alphabet): "claude" (claude-* on Cloud Code, Anthropic keys), "gemini" (gemini-*
on Cloud Code, Gemini keys), "openai" (gpt-* on Cloud Code). Gemini 3 models need a signature
(or skip_thought_signature_validator) on the first function call of each step of the current turn.

Cloud Code, as strict as the live service (the gateway must get each of these right):
- Client identity on every v1internal call: User-Agent `Antigravity/<v> (<platform>)
  Chrome/<v> Electron/<v>` with x-client-name "antigravity" and x-client-version <v>, v >= the
  setting min_client_version (4.3.0); or `antigravity/hub/<v> <os>/<arch>` with v >= 2.9.0 (see
  client_headers()). Anything else is outdated: generation answers 200 with the model text
  OUTDATED_TEXT (streamed like any answer; with the setting outdated_reply "error", the 400
  below instead), housekeeping and countTokens answer 400 FAILED_PRECONDITION, OUTDATED_TEXT.
- Onboarding: an account added with onboarded=False gets loadCodeAssist without
  cloudaicompanionProject and currentTier; onboardUser {"tier_id" (or tierId): one of
  allowedTiers (free-tier, the default; standard-tier), "metadata": {...}} answers
  {"name": "operations/...", "done": false} onboard_polls times, then done with
  response.cloudaicompanionProject {id, name}; from then on the account has its project.
- Projects: generation needs the account's own project (missing, foreign or not yet onboarded:
  403 PERMISSION_DENIED, IAM_PERMISSION_DENIED); fetchAvailableModels takes {} or the own project.
- Catalogue (catalogue.py; DEFAULT_GOOGLE_MODELS are its servable names): fetchAvailableModels
  lists models {name: displayName, maxTokens, maxOutputTokens, quotaInfo, supportsThinking,
  supportsImages, recommended, modelProvider}, the internal chat_*/tab_* models and
  deprecatedModelIds {old: {newModelId}}. Generation with a name not servable (unknown,
  internal, retired) is 404 NOT_FOUND; maxOutputTokens above the model's is 400.
- Claude models (claude-*; claude.py): Anthropic's rules on the Gemini body, 400 each - ids on
  every functionCall / functionResponse (a response naming an earlier call); tool schemas
  without $ref, additionalProperties, format, pattern, min*/max*, default, x-* and the other
  keywords Anthropic refuses; toolConfig.functionCallingConfig.mode "VALIDATED" when functions
  are declared; a concrete thinkingBudget (no thinkingLevel, no -1, >= 1024 unless 0) below
  maxOutputTokens; thought parts signed by the claude family, no other family's signature (nor
  the placeholder) on any part; with thinking on, the model turn of an open tool loop opens with
  a signed thought. Answers: thoughts signed for the claude family when thinking is on,
  functionCall ids "toolu_vrtx_<random>".

- Request types: requestType is agent, image_gen or web_search. Image models (gemini-*-image) are
  served only as image_gen (and image_gen only for them); they refuse tools, a systemInstruction
  and a thinkingConfig; generationConfig.imageConfig takes aspectRatio (1:1, 2:3, 3:2, 3:4, 4:3,
  4:5, 5:4, 9:16, 16:9, 21:9) and imageSize (1K, 2K, 4K). googleSearch grounds gemini-* models
  only (claude-*, gpt-*: 400) and never goes with functionDeclarations (400 "Tool use with function
  calling is unsupported", the Gemini API too). Cloud Code serves no embeddings.

Gemini API beyond generation: :embedContent and :batchEmbedContents on *embedding* models (3072
values of a unit vector, the same for the same text; outputDimensionality cuts it without
normalising; a batch's requests name the path's model), nothing else on them; image models draw
unless responseModalities leaves IMAGE out.
OpenAI beyond chat: /embeddings (text-embedding-3-small 1536 / -large 3072 / ada-002; dimensions
on -3 models only, normalised; encoding_format float or base64 of little-endian float32; usage),
/images/generations and /images/edits (multipart: image or image[] as png/jpeg/webp, optional
mask, prompt, n, size per model family - gpt-image-*, dall-e-3 (n 1, no edits), dall-e-2 - and
b64_json, or a data: URL for response_format url), web_search_options on *-search-* models only
(which take no tools).
Anthropic beyond messages: the web_search_* server tool (name "web_search", max_uses >= 1, not both
domain lists).

Rules (`behave`): checked in the order added, the first match with times left applies. Match
keys: account (refresh token, email or key), model, endpoint (path prefix), path (substring),
kind. Housekeeping calls (loadCodeAssist, onboardUser, fetchAvailableModels, model lists) match
only rules that name an endpoint or path, and OAuth calls only rules with kind "oauth", so a
"429 for this account" rule hits generation and nothing else.
Actions: an HTTP status ("400" ... "529": that error in the upstream's dialect), "stall"
(seconds, or until the client leaves; before the status, or with after_events after the headers
and that many events - a whole body: after its headers), "drop" (after_events, or before any
byte), "garbage" (a body or stream no client can parse; a stream with after_events: that many
good events, then one that is not JSON), "truncate" (a whole body cut in half; a stream cut in
the middle of the event after after_events, default 1, then ended), "reset" (a TCP reset after
the headers and after_events events, default 0), "html" (a 200 whose body is a proxy's HTML error
page), "slow" (chunk_delay), "error200" (a 200 whose body, or only stream event, is the error).
Params: reason, message (a quota hint in it, e.g. "reset after 1h2m3s", is the only one some
answers carry), retry_delay, retry_after, quota_reset_delay, quota_reset_timestamp,
validation_url, rpc (the RPC status, e.g. "FAILED_PRECONDITION"; default the code's usual one),
status (error200 only: the carried error's code, default 400), seconds, after_events, chunk_delay
(slow, and the pace of any other action's events: a fault after some events then comes that much
after the last of them).
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the `sim` package lives next to this file, however it is run or imported
    sys.path.insert(0, _HERE)

from sim.catalogue import CATALOGUE, DEPRECATED, INTERNAL  # noqa: E402
from sim.cloudcode import client_headers  # noqa: E402
from sim.core import Reply, Req  # noqa: E402
from sim.defaults import DEFAULT_GOOGLE_MODELS, DEFAULT_KEY_MODELS, DEFAULT_SETTINGS, DEMO  # noqa: E402
from sim.errors import Fail, error_body  # noqa: E402
from sim.refusals import OUTDATED_TEXT, REFUSALS  # noqa: E402
from sim.server import SimUpstream, main  # noqa: E402
from sim.state import SimState  # noqa: E402
from sim.util import BYPASS_SIGNATURE, THINKING_TEXT, estimate_tokens, mask  # noqa: E402

__all__ = ["BYPASS_SIGNATURE", "CATALOGUE", "DEFAULT_GOOGLE_MODELS", "DEFAULT_KEY_MODELS", "DEFAULT_SETTINGS", "DEMO",
           "DEPRECATED", "INTERNAL", "OUTDATED_TEXT", "REFUSALS", "THINKING_TEXT", "Fail", "Reply", "Req", "SimState",
           "SimUpstream", "client_headers", "error_body", "estimate_tokens", "main", "mask"]

if __name__ == "__main__":
    sys.exit(main())
