"""`GET /metrics`: Prometheus counters of what the gateway served, and the state of its accounts.

Runs after ClientAuth, so the endpoint takes the same key as the API. Labels use the upstream
model and the account id, never what a caller typed: a caller must not be able to mint series.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

from mitmproxy import http
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pool.pool import Pool
from pool.state import ACCOUNT_SCOPE

from . import trace

PATH = "/metrics"
ACCOUNT_STATES = ("ready", "cooling", "disabled")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TOKEN_KINDS = ("input", "output", "cached", "reasoning")


class Metrics:
    """Counts every finished request (the Monitor hands them over) and answers `/metrics`."""

    def __init__(self, pool: Callable[[], Pool | None]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "switchyard_requests", "Caller requests by protocol, upstream model, account, status and client key",
            ["protocol", "model", "account", "status", "key"], registry=r,
        )
        self.tokens = Counter(
            "switchyard_tokens", "Tokens by protocol, upstream model, account, kind and client key",
            ["protocol", "model", "account", "kind", "key"], registry=r,
        )
        self.rerouted = Counter(
            "switchyard_rerouted_requests", "Requests served by another model than routed: a fallback, or background_model",
            ["reason", "model"], registry=r,
        )
        self.latency = Histogram(
            "switchyard_request_duration_seconds", "Whole request, caller's view",
            ["protocol"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttfb = Histogram(
            "switchyard_time_to_first_byte_seconds", "Until the caller's first byte was ready",
            ["protocol"], buckets=TTFB_BUCKETS, registry=r,
        )
        self.attempts = Counter(
            "switchyard_upstream_attempts", "Upstream attempts by account and outcome (ok or an error class)",
            ["account", "outcome"], registry=r,
        )
        self.retries = Counter(
            "switchyard_upstream_retries", "Upstream attempts beyond the first of a request", ["protocol"], registry=r,
        )
        r.register(AccountCollector(pool))
        r.register(LoopCollector())

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.request.method != "GET" or flow.request.path.partition("?")[0] != PATH:
            return
        flow.response = http.Response.make(200, generate_latest(self.registry), {"content-type": CONTENT_TYPE_LATEST})

    def observe(self, flow: http.HTTPFlow, t: trace.Trace) -> None:
        model, account, key = t.model or "", t.account_id or "", t.key or ""
        self.requests.labels(t.protocol, model, account, str(t.status or 0), key).inc()
        if t.usage is not None:
            u = t.usage
            for kind, n in zip(TOKEN_KINDS, (u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens)):
                if n:
                    self.tokens.labels(t.protocol, model, account, kind, key).inc(n)
        if t.fallback_from:
            self.rerouted.labels(f"fallback:{t.fallback_reason}", model).inc()
        if t.background:
            self.rerouted.labels(f"background:{t.background}", model).inc()
        if t.ended is not None:
            self.latency.labels(t.protocol).observe(t.ended - t.started)
        if t.first_byte is not None:
            self.ttfb.labels(t.protocol).observe(t.first_byte)
        for attempt in t.attempts:
            self.attempts.labels(attempt.account_id, str(attempt.outcome)).inc()
        if len(t.attempts) > 1:
            self.retries.labels(t.protocol).inc(len(t.attempts) - 1)


class AccountCollector(Collector):
    """The pool's accounts as they are at scrape time."""

    def __init__(self, pool: Callable[[], Pool | None]) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        counts = GaugeMetricFamily("switchyard_accounts", "Accounts by state", labels=["state"])
        states = GaugeMetricFamily(
            "switchyard_account_state", "1 for the state each account is in", labels=["account", "kind", "name", "state"]
        )
        models = GaugeMetricFamily(
            "switchyard_account_models_cooling", "Models an account is cooling down for", labels=["account"]
        )
        pool = self.pool()
        tally = dict.fromkeys(ACCOUNT_STATES, 0)
        now = time.time()
        for account in pool.accounts if pool is not None else []:
            state = pool.account_state(account.id)  # type: ignore[union-attr]
            current = "disabled" if not account.enabled else "cooling" if state.cooling(None, now) else "ready"
            tally[current] += 1
            for name in ACCOUNT_STATES:
                states.add_metric([account.id, account.kind, account.name, name], float(name == current))
            cooling = sum(1 for key, cd in state.cooldowns.items() if key != ACCOUNT_SCOPE and cd.until > now)
            models.add_metric([account.id], cooling)
        for name, n in tally.items():
            counts.add_metric([name], n)
        yield from (counts, states, models)


class LoopCollector(Collector):
    """The event loop's live tasks: a leak shows here as a count that only grows (scripts/soak.py
    reads it to prove the gateway returns to where it started)."""

    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily("switchyard_asyncio_tasks", "Live asyncio tasks in the gateway's event loop")
        try:
            tasks.add_metric([], len(asyncio.all_tasks()))
        except RuntimeError:  # scraped outside the loop (a test's registry read): nothing to count
            return
        yield tasks
