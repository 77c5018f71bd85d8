"""What a user sees while the gateway runs: a comment and a mark on each flow, one log line per
request, the usage ledger and metrics fed, and mitmweb's memory kept flat."""

from __future__ import annotations

import logging
import time
import weakref
from itertools import islice
from typing import Protocol

from mitmproxy import ctx, http
from mitmproxy.addonmanager import traverse

from . import routes, trace
from .clientkeys import client_of
from pool.config import PLACEHOLDER_TARGET

from .guard import CALLER_HOST
from .settings import Settings

log = logging.getLogger("switchyard.requests")

MARK_FAILED = ":red_circle:"
MARK_RETRIED = ":arrows_counterclockwise:"
# Outcomes that earn no red mark (a status >= 400 still does).
UNMARKED_OUTCOMES = frozenset({"ok", "local", "pending", "client_closed"})
# Outcomes of requests the gateway refused before routing them (ClientAuth, unknown paths).
REFUSALS = {
    401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
    415: "unsupported_media_type", 421: "misdirected", 429: "rate_limited",
}
# The gateway's own endpoints: their answers, refusals included, are neither ledger rows nor metrics.
LOCAL_OPERATIONS = frozenset({"health", "metrics", "models", "model", "dashboard"})


class Sink(Protocol):
    def observe(self, flow: http.HTTPFlow, t: trace.Trace) -> None: ...


class Monitor:
    """Finishes each flow's trace once, then hands it to the sinks (ledger, metrics)."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks
        self._finished: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        t = trace.of(flow)
        if t is not None and t.outcome in ("pending", "ok") and flow not in self._finished:
            t.outcome = "client_closed" if flow.error and "disconnect" in str(flow.error.msg).lower() else "error"
            t.error = flow.error.msg if flow.error else None
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        if flow in self._finished:
            return
        t = trace.of(flow) or _refused(flow)
        if t is None:
            return
        self._finished.add(flow)
        if (client := client_of(flow)) is not None:
            t.key_id, t.key = client.id, client.label
        if t.ended is None:
            t.ended = time.monotonic()
        if t.status is None and flow.response is not None:
            t.status = flow.response.status_code
        _as_the_caller_sent_it(flow)
        flow.comment = t.summary()
        failed = t.outcome not in UNMARKED_OUTCOMES or (t.status or 0) >= 400
        flow.marked = MARK_FAILED if failed else MARK_RETRIED if t.retried else flow.marked
        trace.publish(flow, t)
        if t.outcome == "local":
            return
        log.info(flow.comment)
        for sink in self.sinks:
            sink.observe(flow, t)


def _refused(flow: http.HTTPFlow) -> trace.Trace | None:
    """A trace for an answer the gateway gave before any route ran (bad key, unknown path)."""
    if flow.response is None:
        return None
    path = flow.request.path.partition("?")[0]
    headers = {k.lower(): v for k, v in flow.request.headers.items()}
    route = routes.classify(flow.request.method, flow.request.path, headers)
    protocol = route.protocol if route is not None else routes.guess_protocol(path, headers)
    operation = route.operation if route is not None else "unknown"
    status = flow.response.status_code
    now = time.monotonic()
    return trace.Trace(
        protocol=protocol,
        operation=operation,
        status=status,
        outcome="local" if status < 400 or operation in LOCAL_OPERATIONS else REFUSALS.get(status, "error"),
        started=now - max(time.time() - flow.request.timestamp_start, 0.0),
        ended=now,
    )


def _as_the_caller_sent_it(flow: http.HTTPFlow) -> None:
    """mitmweb and saved flows show the address and Host the caller used, not the reverse
    placeholder (the request has been answered: this changes only the record)."""
    if flow.client_conn.sockname:
        host, port = flow.client_conn.sockname[:2]
        flow.request.scheme, flow.request.host, flow.request.port = "http", host, port
    caller_host = flow.metadata.get(CALLER_HOST)
    if caller_host:
        flow.request.host_header = caller_host


class FlowCap:
    """Keeps mitmweb's memory flat: past `[monitor] max_flows` the oldest finished flows go.
    mitmdump keeps no flows and has no view: there this does nothing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.view = None

    def running(self) -> None:
        self.view = ctx.master.addons.get("view")
        if self.view is not None and ctx.options.store_streamed_bodies == ctx.options.default("store_streamed_bodies"):
            # Streamed answers are then readable in mitmweb too; the cap bounds what they cost.
            ctx.options.update(store_streamed_bodies=True)

    def response(self, flow: http.HTTPFlow) -> None:
        self._trim()

    def error(self, flow: http.HTTPFlow) -> None:
        self._trim()

    def _trim(self) -> None:
        view, config = self.view, self.settings.config
        if view is None or config is None:
            return
        excess = view.store_count() - config.monitor.max_flows
        if excess <= 0:
            return
        # The store is insertion-ordered, oldest first; the view itself may be filtered or sorted.
        oldest = list(islice((f for f in view._store.values() if not f.live), excess))
        for flow in oldest:
            view.remove([flow])  # one at a time: a longer list logs an alert per call


class WebColumns:
    """mitmweb's flow list shows each flow's comment — protocol -> account -> model, attempts,
    tokens — as a column of its own (it is off by default). A `web_columns` the user set wins.
    mitmdump has no such option: there this does nothing."""

    COLUMNS = ["icon", "method", "path", "status", "size", "time", "comment"]

    def running(self) -> None:
        if "web_columns" in ctx.options and ctx.options.web_columns == ctx.options.default("web_columns"):
            ctx.options.update(web_columns=self.COLUMNS)


class _ListeningLine(logging.Filter):
    """mitmproxy announces its listener as a reverse proxy to the placeholder target, which reads
    like a fault; say what listens instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(f"reverse proxy to {PLACEHOLDER_TARGET} listening at "):
            where = message.rsplit(" ", 1)[-1].rstrip(".")
            record.msg, record.args = f"Switchyard gateway listening at http://{where}", ()
        return True


class _NoLegacyEvent(logging.Filter):
    """Keeps the per-request line out of mitmproxy's deprecated `add_log` event, which no addon
    here takes: each record became a wake-up of the event loop and a call of that hook on every
    addon (about a tenth of a request's cost). Handlers (the terminal, mitmweb's log) still get it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != log.name


class Quiet:
    """The Monitor's line is the only per-request output, unless the user asked mitmproxy for
    more (a `flow_detail` or `termlog_verbosity` other than the default)."""

    CHATTY = logging.getLogger("mitmproxy.proxy.server")  # client/server connect lines, at INFO
    LISTENERS = logging.getLogger("mitmproxy.proxy.mode_servers")

    def __init__(self) -> None:
        self._listening = _ListeningLine()
        self._no_legacy_event = _NoLegacyEvent()
        self._legacy: logging.Handler | None = None

    def load(self, loader: object) -> None:
        self.LISTENERS.addFilter(self._listening)

    def configure(self, updated: set[str]) -> None:
        if "termlog_verbosity" in updated and "termlog_verbosity" in ctx.options:
            default = ctx.options.termlog_verbosity == ctx.options.default("termlog_verbosity")
            self.CHATTY.setLevel(logging.WARNING if default else logging.NOTSET)

    def running(self) -> None:
        if "flow_detail" in ctx.options and ctx.options.flow_detail == ctx.options.default("flow_detail"):
            ctx.options.update(flow_detail=0)
        legacy = getattr(ctx.master, "_legacy_log_events", None)
        if isinstance(legacy, logging.Handler) and not any(hasattr(a, "add_log") for a in traverse(ctx.master.addons.chain)):
            self._legacy = legacy
            legacy.addFilter(self._no_legacy_event)

    def done(self) -> None:
        self.CHATTY.setLevel(logging.NOTSET)
        self.LISTENERS.removeFilter(self._listening)
        if self._legacy is not None:
            self._legacy.removeFilter(self._no_legacy_event)
            self._legacy = None
