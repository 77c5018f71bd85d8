"""Refusals and how each upstream dialect renders them (Google RPC, OpenAI, Anthropic, OAuth)."""

from __future__ import annotations

from typing import Any, NamedTuple

from .util import JSON


class ErrSpec(NamedTuple):
    """How one HTTP status looks in each upstream's error dialect."""

    google: str
    message: str
    openai_type: str
    openai_code: str | None
    anthropic: str
    oauth: str


ERRORS: dict[int, ErrSpec] = {
    400: ErrSpec("INVALID_ARGUMENT", "Request contains an invalid argument.", "invalid_request_error", None,
                 "invalid_request_error", "invalid_request"),
    401: ErrSpec("UNAUTHENTICATED", "Request had invalid authentication credentials.", "invalid_request_error",
                 "invalid_api_key", "authentication_error", "invalid_client"),
    403: ErrSpec("PERMISSION_DENIED", "The caller does not have permission.", "invalid_request_error",
                 "permission_denied", "permission_error", "access_denied"),
    404: ErrSpec("NOT_FOUND", "Requested entity was not found.", "invalid_request_error", "model_not_found",
                 "not_found_error", "not_found"),
    413: ErrSpec("INVALID_ARGUMENT", "Request payload size exceeds the limit.", "invalid_request_error", None,
                 "request_too_large", "invalid_request"),
    429: ErrSpec("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", "rate_limit_error",
                 "rate_limit_exceeded", "rate_limit_error", "rate_limit_exceeded"),
    500: ErrSpec("INTERNAL", "Internal error encountered.", "server_error", None, "api_error", "internal_failure"),
    503: ErrSpec("UNAVAILABLE", "The service is currently unavailable.", "server_error", None, "overloaded_error",
                 "temporarily_unavailable"),
    504: ErrSpec("DEADLINE_EXCEEDED", "Deadline expired before operation could complete.", "server_error", None,
                 "api_error", "temporarily_unavailable"),
    529: ErrSpec("UNAVAILABLE", "Overloaded", "server_error", None, "overloaded_error", "temporarily_unavailable"),
}
ERROR_DOMAIN = {"google": "cloudcode-pa.googleapis.com", "gemini": "googleapis.com"}


class Fail(Exception):
    """A refusal the real upstream would send; rendered later in the caller's dialect."""

    def __init__(self, status: int, message: str | None = None, *, reason: str | None = None,
                 metadata: dict[str, str] | None = None, retry_delay: str | None = None,
                 retry_after: str | None = None, param: str | None = None, code: str | None = None,
                 rpc: str | None = None, domain: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason
        self.metadata = metadata or {}
        self.retry_delay, self.retry_after, self.param, self.code = retry_delay, retry_after, param, code
        self.rpc, self.domain = rpc, domain  # Google RPC status and ErrorInfo domain, when not the usual ones


def bad(message: str, **kw: Any) -> Fail:
    return Fail(400, message, **kw)


def error_body(kind: str, f: Fail) -> JSON:
    spec = ERRORS.get(f.status, ERRORS[500])
    msg = f.message or spec.message
    if kind == "openai":
        code = f.code or spec.openai_code
        return {"error": {"message": msg, "type": spec.openai_type, "param": f.param, "code": code}}
    if kind == "anthropic":
        return {"type": "error", "error": {"type": spec.anthropic, "message": msg}}
    if kind == "oauth":
        return {"error": f.code or spec.oauth, "error_description": msg}
    if kind in ("control", "unknown"):
        return {"error": msg}
    details: list[JSON] = []
    if f.reason:
        info: dict[str, Any] = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": f.reason,
                                "domain": f.domain or ERROR_DOMAIN.get(kind, "googleapis.com")}
        if f.metadata:
            info["metadata"] = f.metadata
        details.append(info)
    if f.retry_delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f.retry_delay})
    err: dict[str, Any] = {"code": f.status, "message": msg, "status": f.rpc or spec.google}
    if details:
        err["details"] = details
    return {"error": err}
