"""The live Google services' refusals, as data: rule name -> HTTP status, Google RPC status,
ErrorInfo reason (when the service sends one) and message template (str.format fields).

Cloud Code, the Gemini API and the Gemini body both use are checked against this one table, so a
refusal reads the same wherever it is raised and the sim's manual can point at it. The OpenAI and
Anthropic dialect checks keep their own wording next to the code (they render no RPC status)."""

from __future__ import annotations

from typing import Any, NamedTuple

from .errors import Fail

OUTDATED_TEXT = "This version of Antigravity is no longer supported. Please update to receive the latest features!"
UNAUTHENTICATED_TEXT = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


class Refusal(NamedTuple):
    status: int
    rpc: str
    reason: str | None
    message: str
    domain: str | None = None  # ErrorInfo domain, when not the upstream's usual one
    metadata: dict[str, str] | None = None  # ErrorInfo metadata templates


BAD = 400, "INVALID_ARGUMENT", None
REFUSALS: dict[str, Refusal] = {
    # ---- any Google upstream
    "invalid_json": Refusal(*BAD, "Invalid JSON payload received. {error}"),
    "not_json_object": Refusal(*BAD, "Invalid JSON payload received. The body must be a JSON object."),
    # ---- the Gemini body (GenerateContentRequest), Cloud Code and Gemini API alike
    "not_an_object": Refusal(*BAD, "Invalid value at '{where}': expected an object, got {value}"),
    "not_a_list": Refusal(*BAD, "Invalid value at '{where}': expected a list"),
    "unknown_field": Refusal(*BAD, 'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'),
    "schema_type": Refusal(*BAD, "Invalid value at '{where}.type'"
                                 " (type.googleapis.com/google.ai.generativelanguage.v1beta.Type), {value}"),
    "schema_properties": Refusal(*BAD, "Invalid value at '{where}.properties': expected an object"),
    "function_name": Refusal(*BAD, "* GenerateContentRequest.{where}.name: Invalid function name. Must start with a"
                                   " letter or an underscore. Must be a-z, A-Z, 0-9, or contains underscores, dots,"
                                   " colons and dashes, with a maximum length of 64."),
    "function_two_schemas": Refusal(*BAD, "* GenerateContentRequest.{where}: parameters and parameters_json_schema"
                                          " cannot both be set."),
    "part_no_data": Refusal(*BAD, "* GenerateContentRequest.{where}.data: required oneof field 'data' must have one"
                                  " initialized field"),
    "part_two_data": Refusal(*BAD, "Invalid value at '{where}': oneof field 'data' is already set. Cannot set"
                                   " '{field}'"),
    "signature_base64": Refusal(*BAD, "Invalid value at '{where}.thought_signature' (TYPE_BYTES), Base64 decoding"
                                      " failed for {value}"),
    "text_not_string": Refusal(*BAD, "Invalid value at '{where}.text' (TYPE_STRING), {value}"),
    "inline_data_fields": Refusal(*BAD, "* GenerateContentRequest.{where}.inline_data: mime_type and data are"
                                        " required"),
    "inline_data_base64": Refusal(*BAD, "Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding"
                                        " failed for {value}"),
    "function_part_name": Refusal(*BAD, "* GenerateContentRequest.{where}.{kind}.name: Name is required."),
    "function_part_struct": Refusal(*BAD, "Invalid value at '{where}.{kind}.{field}'"
                                          " (type.googleapis.com/google.protobuf.Struct), {value}"),
    "function_response_payload": Refusal(*BAD, "* GenerateContentRequest.{where}.function_response.response:"
                                               " Response is required."),
    "file_uri": Refusal(*BAD, "* GenerateContentRequest.{where}.file_data.file_uri: File uri is required."),
    "system_parts": Refusal(*BAD, "* GenerateContentRequest.{where}.parts: parts must be a list"),
    "no_contents": Refusal(*BAD, "* GenerateContentRequest.contents: contents is not specified"),
    "bad_role": Refusal(*BAD, "Please use a valid role: user, model. (got {role} at {where}.role)"),
    "first_turn_model": Refusal(*BAD, "Please ensure that multiturn requests start with a user turn. (contents[0] has"
                                      " role 'model')"),
    "roles_repeat": Refusal(*BAD, "Please ensure that multiturn requests alternate between user and model. ({where}"
                                  " repeats role '{role}')"),
    "empty_parts": Refusal(*BAD, "* GenerateContentRequest.{where}.parts: contents.parts must not be empty."),
    "call_in_user_turn": Refusal(*BAD, "Please ensure that function call parts are in model turns ({where} is a user"
                                       " turn)."),
    "response_in_model_turn": Refusal(*BAD, "Please ensure that function response parts are in user turns ({where}"
                                            " is a model turn)."),
    "response_without_call": Refusal(*BAD, "Please ensure that function response turn comes immediately after a"
                                           " function call turn. ({where})"),
    "response_unknown_name": Refusal(*BAD, "Function response {name!r} at {where} answers no function call of the"
                                           " previous turn (calls: {calls})."),
    "response_count": Refusal(*BAD, "Please ensure that the number of function response parts is equal to the number"
                                    " of function call parts of the function call turn. ({where}: {responses}"
                                    " responses, {calls} calls)"),
    "signature_corrupted": Refusal(*BAD, "Corrupted thought signature."),
    "search_with_functions": Refusal(*BAD, "Tool use with function calling is unsupported"),
    "image_aspect": Refusal(*BAD, "* GenerateContentRequest.generation_config.image_config.aspect_ratio: {value} is not"
                                  " a supported aspect ratio ({allowed})."),
    "image_size": Refusal(*BAD, "* GenerateContentRequest.generation_config.image_config.image_size: {value} is not a"
                                " supported image size ({allowed})."),
    "modalities": Refusal(*BAD, "Invalid value at 'generation_config.response_modalities': {value}"),
    "image_model_tools": Refusal(*BAD, "Function calling is not enabled for models/{model}"),
    "image_model_system": Refusal(*BAD, "Developer instruction is not enabled for models/{model}"),
    "image_model_thinking": Refusal(*BAD, "Thinking is not enabled for models/{model}"),
    "signature_missing": Refusal(*BAD, "Function call is missing a thought_signature in functionCall parts. This is"
                                       " required for tools to work correctly, and missing thought_signature may lead"
                                       " to degraded model performance. Additional data, function call"
                                       " `default_api:{name}` , position {position}. Please refer to"
                                       " https://ai.google.dev/gemini-api/docs/thought-signatures for more details."),
    # ---- Cloud Code (v1internal)
    "credentials_missing": Refusal(401, "UNAUTHENTICATED", "CREDENTIALS_MISSING", UNAUTHENTICATED_TEXT,
                                   "googleapis.com"),
    "access_token_expired": Refusal(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED", UNAUTHENTICATED_TEXT,
                                    "googleapis.com"),
    "v1_method_not_found": Refusal(404, "NOT_FOUND", None, "Method not found: v1internal:{method}"),
    "metadata_required": Refusal(*BAD, 'Invalid request: metadata is required (e.g. {{"ideType": "ANTIGRAVITY"}}).'),
    "client_outdated": Refusal(400, "FAILED_PRECONDITION", None, OUTDATED_TEXT),
    "tier_unknown": Refusal(*BAD, "Invalid request: tier_id {tier!r} is not one of this account's allowed tiers"
                                  " ({allowed})."),
    "project_denied": Refusal(403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED",
                              "Permission '{permission}' denied on resource '//cloudaicompanion.googleapis.com/"
                              "projects/{project}/locations/global' (or it may not exist).",
                              "cloudaicompanion.googleapis.com",
                              {"permission": "{permission}", "resource": "projects/{project}/locations/global"}),
    "envelope_field": Refusal(*BAD, "Invalid request: envelope field {field!r} is required (project, model, request,"
                                    " userAgent, requestType, requestId)."),
    "envelope_request": Refusal(*BAD, "Invalid request: 'request' must be a GenerateContentRequest object."),
    "model_not_found": Refusal(404, "NOT_FOUND", None, "Requested entity was not found. Model {model} is not"
                                                       " available to this account."),
    "max_output_tokens": Refusal(*BAD, "The requested maxOutputTokens {asked} exceeds the model limit {limit}"),
    "quota_exhausted": Refusal(429, "RESOURCE_EXHAUSTED", "QUOTA_EXHAUSTED", "You have exhausted your capacity on"
                               " this model. Your quota will reset after {delay}."),
    "request_type": Refusal(*BAD, "Invalid request: requestType {value!r} is not one of agent, image_gen, web_search."),
    "image_gen_needed": Refusal(*BAD, "Invalid request: model {model} generates images: it is served with requestType"
                                      " 'image_gen' (got {value!r})."),
    "image_gen_model": Refusal(*BAD, "Invalid request: requestType 'image_gen' needs an image model (got {model})."),
    "search_model": Refusal(*BAD, "Google Search grounding is not supported for model {model}."),
    "count_request": Refusal(*BAD, 'Invalid request: countTokens needs {{"request": {{"model": "models/<m>",'
                                   ' "contents": [...]}}}}.'),
    "count_model": Refusal(*BAD, 'Invalid request: request.model is required ("models/<m>").'),
    # ---- Cloud Code, Claude models: Anthropic's rules and wording, relayed
    "claude_call_id": Refusal(*BAD, "{where}.tool_use.id: Field required"),
    "claude_response_id": Refusal(*BAD, "{where}.tool_result.tool_use_id: Field required"),
    "claude_response_unmatched": Refusal(*BAD, "{where}: unexpected `tool_use_id` found in `tool_result` blocks: {id}."
                                               " Each `tool_result` block must have a corresponding `tool_use` block"
                                               " in the previous message."),
    "claude_schema_keyword": Refusal(*BAD, "{where}: JSON schema is invalid. It must match JSON Schema draft 2020-12"
                                           " (https://json-schema.org/draft/2020-12). Learn more about tool use at"
                                           " https://docs.claude.com/en/docs/tool-use. (`{keyword}` at {path} of"
                                           " tool {tool!r} is not supported)"),
    "claude_tool_mode": Refusal(*BAD, "Invalid value at 'request.tool_config.function_calling_config.mode': this model"
                                      " calls functions only in mode VALIDATED (got {mode})."),
    "claude_thinking_level": Refusal(*BAD, "thinking.enabled.budget_tokens: Field required (thinkingLevel {level!r} is"
                                           " not supported for this model: give a thinkingBudget)"),
    "claude_budget_auto": Refusal(*BAD, "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
                                        " (a thinkingBudget of -1, dynamic thinking, is not supported for this model)"),
    "claude_budget_low": Refusal(*BAD, "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
                                       " (got {budget})"),
    "claude_max_tokens": Refusal(*BAD, "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our"
                                       " documentation at https://docs.claude.com/en/docs/build-with-claude/"
                                       "extended-thinking#max-tokens-and-context-window-size"),
    "claude_thinking_unsigned": Refusal(*BAD, "{where}.thinking.signature: Field required"),
    "claude_thinking_signature": Refusal(*BAD, "{where}: Invalid `signature` in `thinking` block"),
    "claude_foreign_signature": Refusal(*BAD, "{where}: Invalid `signature` in `thinking` block"),
    "claude_open_loop": Refusal(*BAD, "messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`,"
                                      " but found `{found}`. When `thinking` is enabled, a final `assistant` message"
                                      " must start with a thinking block (preceeding the lastmost set of `tool_use`"
                                      " and `tool_result` blocks). We recommend you include thinking blocks from"
                                      " previous turns. To avoid this requirement, disable `thinking`. Please consult"
                                      " our documentation at https://docs.claude.com/en/docs/build-with-claude/"
                                      "extended-thinking"),
    # ---- Gemini API
    "api_key_missing": Refusal(403, "PERMISSION_DENIED", None, "Method doesn't allow unregistered callers (callers"
                               " without established identity). Please use API Key or other form of API consumer"
                               " identity to call this API."),
    "api_key_invalid": Refusal(*BAD[:2], "API_KEY_INVALID", "API key not valid. Please pass a valid API key.",
                               metadata={"service": "generativelanguage.googleapis.com"}),
    "gemini_path_not_found": Refusal(404, "NOT_FOUND", None, "Method not found: {path}"),
    "gemini_model_method": Refusal(404, "NOT_FOUND", None, "models/{model} is not found for API version v1beta, or"
                                   " is not supported for {method}. Call ListModels to see the list of available"
                                   " models and their supported methods."),
    "gemini_model_not_found": Refusal(404, "NOT_FOUND", None, "models/{model} is not found for API version v1beta."),
    "count_two_bodies": Refusal(*BAD, "contents and generate_content_request cannot both be set."),
    "embed_content": Refusal(*BAD, "* EmbedContentRequest.{where}content: content is not specified"),
    "embed_text": Refusal(*BAD, "* EmbedContentRequest.{where}content.parts: only text parts can be embedded"),
    "embed_dimensions": Refusal(*BAD, "* EmbedContentRequest.{where}output_dimensionality: must be between 1 and"
                                      " {limit} (got {value})"),
    "embed_model_mismatch": Refusal(*BAD, "* BatchEmbedContentsRequest.requests[{index}].model: {model} does not match"
                                          " the model of the request, {expected}."),
    "embed_batch": Refusal(*BAD, "* BatchEmbedContentsRequest.requests: between 1 and 100 requests are needed"
                                 " (got {count})."),
}


def refuse(rule: str, *, metadata: dict[str, str] | None = None, retry_delay: str | None = None,
           **fields: Any) -> Fail:
    """The refusal `rule` of the table, its message filled in from `fields`."""
    r = REFUSALS[rule]
    meta = {k: v.format(**fields) for k, v in (r.metadata or {}).items()} | (metadata or {})
    return Fail(r.status, r.message.format(**fields), reason=r.reason, metadata=meta, retry_delay=retry_delay,
                rpc=r.rpc, domain=r.domain)
