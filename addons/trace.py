"""What happened to one caller request, kept on the flow for mitmweb, logs and the ledger."""

from __future__ import annotations

import time
import weakref
from dataclasses import asdict, dataclass, field

from mitmproxy import http

from pool.dispatch import Attempt

from .translate import canonical as c

KEY = "switchyard"

# Traces live beside their flows, not in `flow.metadata`, which mitmproxy deep-copies and saves
# with `-w` (only plain data can go there: `publish` puts a plain summary when the flow ends).
_traces: weakref.WeakKeyDictionary[http.HTTPFlow, "Trace"] = weakref.WeakKeyDictionary()


@dataclass(slots=True)
class Trace:
    protocol: str
    operation: str
    requested_model: str | None = None
    model: str | None = None  # the upstream model
    account_id: str | None = None
    account: str | None = None  # display name
    attempts: list[Attempt] = field(default_factory=list)
    stream: bool = False
    status: int | None = None
    outcome: str = "pending"  # ok | an error class | client_closed | local
    error: str | None = None
    usage: c.Usage | None = None
    key_id: str | None = None  # the client key that called ("admin" for the config's api_key)
    key: str | None = None  # its label
    background: str | None = None  # the background rule that routed it to `background_model`
    fallback_from: str | None = None  # the model that could not serve, when a fallback did
    fallback_reason: str | None = None
    images: int = 0  # pictures the answer carried (image generation, or an image model in a chat)
    started: float = field(default_factory=time.monotonic)
    first_byte: float | None = None  # seconds after start when the caller's first byte was ready
    ended: float | None = None

    @property
    def retried(self) -> bool:
        return len(self.attempts) > 1

    def summary(self) -> str:
        """One line: protocol -> account -> model, attempts, outcome, tokens, timing."""
        parts = [self.protocol]
        if self.account:
            parts.append(self.account)
        if self.model:
            parts.append(self.model if self.model == self.requested_model else f"{self.model} (asked {self.requested_model})")
        line = " -> ".join(parts)
        if self.fallback_from:
            line += f" (fallback from {self.fallback_from}: {self.fallback_reason})"
        if self.background:
            line += f" [background: {self.background}]"
        if self.key:
            line += f" | key {self.key}"
        if self.attempts:
            tried = ", ".join(f"{a.account}:{a.status or '-'} {a.outcome}" for a in self.attempts)
            line += f" | attempts {len(self.attempts)} [{tried}]"
        line += f" | {self.outcome}"
        if self.status:
            line += f" {self.status}"
        if self.usage is not None:
            line += f" | tokens {self.usage.input_tokens} in / {self.usage.output_tokens} out"
        if self.images:
            line += f" | {self.images} image{'s' if self.images != 1 else ''}"
        if self.first_byte is not None:
            line += f" | ttfb {self.first_byte * 1000:.0f} ms"
        if self.ended is not None:
            line += f" | {(self.ended - self.started) * 1000:.0f} ms"
        if self.error:
            line += f" | {self.error}"
        return line


def attach(flow: http.HTTPFlow, trace: Trace) -> Trace:
    _traces[flow] = trace
    return trace


def of(flow: http.HTTPFlow) -> Trace | None:
    return _traces.get(flow)


def publish(flow: http.HTTPFlow, trace: Trace) -> None:
    """Plain data for saved flows and scripts: who served, how, and what it cost."""
    data = {
        "protocol": trace.protocol,
        "operation": trace.operation,
        "requested_model": trace.requested_model,
        "model": trace.model,
        "account_id": trace.account_id,
        "account": trace.account,
        "attempts": [asdict(a) for a in trace.attempts],
        "outcome": trace.outcome,
        "status": trace.status,
        "error": trace.error,
        "key": trace.key,
        "background": trace.background,
        "fallback_from": trace.fallback_from,
        "fallback_reason": trace.fallback_reason,
    }
    if trace.usage is not None:
        data["usage"] = asdict(trace.usage)
    if trace.images:
        data["images"] = trace.images
    flow.metadata[KEY] = data
