"""Keeps the usage ledger (`pool/ledger.py`, or `pool/pgledger.py` with `[usage] database_url`)
open while the gateway runs; the Monitor feeds it."""

from __future__ import annotations

from mitmproxy import http

from pool import usagedb
from pool.ledger import Ledger, Record

from . import trace
from .settings import Settings


class UsageLedger:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ledger: Ledger | None = None

    def running(self) -> None:
        config = self.settings.config
        if config is None or self.ledger is not None:
            return
        self.ledger = usagedb.writer(self.settings.home, config)
        self.ledger.start()

    def done(self) -> None:
        ledger, self.ledger = self.ledger, None
        if ledger is not None:
            ledger.close()

    def observe(self, flow: http.HTTPFlow, t: trace.Trace) -> None:
        if self.ledger is not None:
            self.ledger.add(record(flow, t))


def record(flow: http.HTTPFlow, t: trace.Trace) -> Record:
    usage = t.usage
    return Record(
        at=flow.request.timestamp_start,
        protocol=t.protocol,
        operation=t.operation,
        requested_model=t.requested_model,
        model=t.model,
        account_id=t.account_id,
        account=t.account,
        status=t.status,
        error_class=None if t.outcome == "ok" else t.outcome,
        attempts=len(t.attempts),
        stream=t.stream,
        latency_ms=_ms(t.ended - t.started if t.ended is not None else None),
        ttfb_ms=_ms(t.first_byte),
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        cached_tokens=usage.cached_tokens if usage else 0,
        reasoning_tokens=usage.reasoning_tokens if usage else 0,
        attempt_errors=",".join(str(a.outcome) for a in t.attempts if a.outcome != "ok") or None,
        key_id=t.key_id,
        key_label=t.key,
        background=t.background,
        fallback_from=t.fallback_from,
        fallback_reason=t.fallback_reason,
        images=t.images,
        flow_id=flow.id,
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
