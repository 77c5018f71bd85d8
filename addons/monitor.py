"""What a user sees while the gateway runs: a comment and a mark on each flow, one log line."""

from __future__ import annotations

import logging
import time

from mitmproxy import http

from . import trace

log = logging.getLogger("switchyard.requests")

MARK_FAILED = ":red_circle:"
MARK_RETRIED = ":arrows_counterclockwise:"


class Monitor:
    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        t = trace.of(flow)
        if t is not None and t.outcome in ("pending", "ok"):
            t.outcome = "client_closed" if flow.error and "disconnect" in str(flow.error.msg).lower() else "error"
            t.error = flow.error.msg if flow.error else None
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        t = trace.of(flow)
        if t is None:
            return
        if t.ended is None:
            t.ended = time.monotonic()
        if t.status is None and flow.response is not None:
            t.status = flow.response.status_code
        flow.comment = t.summary()
        failed = t.outcome not in ("ok", "local", "pending", "client_closed")
        flow.marked = MARK_FAILED if failed else MARK_RETRIED if t.retried else flow.marked
        trace.publish(flow, t)
        if t.outcome != "local":
            log.info(t.summary())
