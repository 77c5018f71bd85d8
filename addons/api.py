"""The JSON admin API behind the dashboard (`/api/...`): one endpoint per thing a page shows or
does, with the same data as the CLI (`pool/admin.py`, `pool/stats.py` are shared).

ClientAuth has checked the admin key by the time a request gets here (when auth is on). Errors
are JSON: {"error": {"message", "type", "field"?, "fields"?}}. Changes that write files run in a
thread (the event loop never waits on a disk), then the pool takes them in at once.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pool import admin, charts, editable, history, login, mapping, models, snippets, stats
from pool import config as config_file
from pool.accounts import Account, StoreError
from pool.catalog import CatalogError
from pool.check import Checker
from pool.config import Config, ConfigError
from pool.google import GoogleError
from pool.pool import Pool

from .settings import Settings

CALLBACK = "/ui/oauth-callback"
KEY_PLACEHOLDER = "YOUR_SWITCHYARD_KEY"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "[::1]"})
ERROR_TYPES = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 409: "conflict", 415: "unsupported_media_type",
               502: "upstream", 503: "unavailable"}
ADMIN_STATUS = {"invalid": 400, "not_found": 404, "conflict": 409}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, field: str | None = None, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.fields = status, message, field, fields

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": ERROR_TYPES.get(self.status, "error")}
        if self.field:
            error["field"] = self.field
        if self.fields:
            error["fields"] = self.fields
        return {"error": error}


@dataclass(slots=True)
class Call:
    """One API request, as the handlers see it."""

    params: dict[str, str]  # from the path
    query: dict[str, str]
    body: Any  # the JSON body ({} when none)
    origin: str  # the gateway as this caller reaches it: http://host:port


@dataclass(slots=True)
class Answer:
    body: Any
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Context:
    """What the API needs from the running gateway (the addons fill it in)."""

    settings: Settings
    pool: Callable[[], Pool | None]
    ledger_file: Callable[[], Path | str]  # the SQLite file, or the PostgreSQL URL (pool/usagedb.py)
    mitmweb: Callable[[], str | None]  # its URL (with its token when auth is on), when mitmweb runs
    apply_config: Callable[[Config], None]
    started: Callable[[], Config | None]  # the config the gateway started with
    version: str


Handler = Callable[["Api", Call], Awaitable[Answer]]


class Api:
    def __init__(self, context: Context) -> None:
        self.cx = context
        self.logins = login.Pending()

    # --- plumbing ---------------------------------------------------------------------------------
    @property
    def pool(self) -> Pool:
        pool = self.cx.pool()
        if pool is None:
            raise ApiError(503, "the gateway is still starting")
        return pool

    def account(self, account_id: str) -> Account:
        try:
            return self.pool.store.get(account_id)
        except StoreError as e:
            raise ApiError(404, str(e)) from None

    def rows(self, accounts: list[Account] | None = None) -> list[dict[str, Any]]:
        pool = self.cx.pool()
        if pool is None:
            return []
        now = time.time()
        rows = admin.describe_all(accounts if accounts is not None else pool.accounts, pool.account_state, now, pool.config.quota.threshold)
        for row in rows:
            row["in_flight"] = pool.in_flight(row["id"])
        return rows

    def row(self, account_id: str) -> dict[str, Any]:
        return self.rows([self.account(account_id)])[0]

    async def change_files(self, work: Callable[[], Any]) -> Any:
        """A change to the accounts or state files (in a thread), then taken in by the pool."""
        try:
            result = await asyncio.to_thread(work)
        except admin.AdminError as e:
            raise ApiError(ADMIN_STATUS.get(e.kind, 400), str(e), field=e.field) from None
        if (pool := self.cx.pool()) is not None:
            pool.sync()
        return result

    def fingerprint(self) -> tuple:
        """Changes whenever an account or what the pool knows of one does (the live watcher)."""
        pool = self.cx.pool()
        if pool is None:
            return ()
        return tuple(
            (a.id, a.enabled, a.priority, a.label, a.max_concurrent, a.disabled_reason, a.email, a.project,
             pool.account_state(a.id).updated_at)
            for a in pool.accounts
        )

    def with_links(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each ledger row with its flow's address in mitmweb, when mitmweb runs."""
        web = self.cx.mitmweb()
        for row in rows:
            row["mitmweb_url"] = flow_link(web, row["flow_id"]) if web and row.get("flow_id") else None
        return rows

    # --- overview -------------------------------------------------------------------------------------
    async def overview(self, call: Call) -> Answer:
        path, now = self.cx.ledger_file(), time.time()
        hour, day = await asyncio.gather(
            asyncio.to_thread(stats.report, path, now - 3600, ()), asyncio.to_thread(stats.report, path, now - 86400, ())
        )
        rows = self.rows()
        counts = {state: sum(r["status"] == state for r in rows) for state in (admin.READY, admin.COOLING, admin.DISABLED)}
        return Answer({
            "version": self.cx.version,
            "requests": {"hour": _summary(hour.totals), "day": _summary(day.totals)},
            "accounts": {**counts, "total": len(rows)},
            "next": self.next_accounts(),
            "mitmweb": self.cx.mitmweb(),
            "base_url": call.origin,
        })

    def next_accounts(self) -> list[dict[str, Any]]:
        """Per model family the pool serves: its newest model and the account a request for it
        would go to now (or why none would)."""
        pool = self.cx.pool()
        if pool is None:
            return []
        families = sorted({models.identify(name, display).family for name, display in pool.model_names().items()})
        out = []
        for family in families:
            model = mapping.by_family(family, pool)
            if model is None:
                continue
            selection = pool.select(model)
            best = selection.ranked[0] if selection.ranked else None
            out.append({
                "family": family, "model": model,
                "account_id": best.id if best else None, "account": best.name if best else None,
                "serving": selection.serving,
                "cooling_until": None if best else selection.earliest,
            })
        return out

    # --- accounts ----------------------------------------------------------------------------------------
    async def list_accounts(self, call: Call) -> Answer:
        return Answer(self.rows())

    async def get_account(self, call: Call) -> Answer:
        return Answer(self.row(call.params["id"]))

    async def add_account(self, call: Call) -> Answer:
        body = _object(call.body)
        home = self.cx.settings.home
        options = {"priority": body.get("priority", 0), "label": body.get("label") or "", "max_concurrent": body.get("max_concurrent")}
        globs = body.get("models") or []
        if isinstance(globs, str):
            globs = globs.split(",")
        if not isinstance(globs, list):
            raise ApiError(400, "models: a list of globs, or one comma-separated text", field="models")

        def add() -> Account:
            if body.get("kind") == "google":
                return admin.add_google(
                    home, body.get("refresh_token", ""), email=body.get("email"), project=body.get("project"), **options
                )
            return admin.add_key(home, str(body.get("kind")), body.get("api_key", ""), base_url=body.get("base_url"), models=globs, **options)

        account = await self.change_files(add)
        return Answer(self.row(account.id), status=201)

    async def import_accounts(self, call: Call) -> Answer:
        body = _object(call.body)
        added, skipped = await self.change_files(lambda: admin.import_accounts(self.cx.settings.home, body.get("text", "")))
        return Answer({"added": added, "skipped": skipped})

    async def set_account(self, call: Call) -> Answer:
        body = _object(call.body)
        unknown = set(body) - {"priority", "max_concurrent", "label"}
        if unknown:
            raise ApiError(400, f"cannot set {', '.join(sorted(unknown))}: only priority, max_concurrent and label", field=sorted(unknown)[0])
        account_id = call.params["id"]
        await self.change_files(lambda: admin.change(self.cx.settings.home, account_id, **body))
        return Answer(self.row(account_id))

    async def enable(self, call: Call) -> Answer:
        account_id = call.params["id"]
        await self.change_files(lambda: admin.enable(self.cx.settings.home, account_id))
        return Answer(self.row(account_id))

    async def disable(self, call: Call) -> Answer:
        account_id = call.params["id"]
        await self.change_files(lambda: admin.disable(self.cx.settings.home, account_id))
        return Answer(self.row(account_id))

    async def remove(self, call: Call) -> Answer:
        account_id = call.params["id"]
        await self.change_files(lambda: admin.remove(self.cx.settings.home, account_id))
        return Answer({"removed": account_id})

    async def refresh(self, call: Call) -> Answer:
        account = self.account(call.params["id"])
        failure = await self._refresh(account)
        if failure is not None:
            raise ApiError(502, failure)
        return Answer(self.row(account.id))

    async def refresh_all(self, call: Call) -> Answer:
        results = []
        for account in self.pool.accounts:
            failure = await self._refresh(account)
            results.append({"id": account.id, "ok": failure is None, "error": failure})
        return Answer({"results": results, "accounts": self.rows()})

    async def _refresh(self, account: Account) -> str | None:
        """Tokens, project and quota of a Google account; a key account's model list. Why it
        failed, or None."""
        pool = self.pool
        try:
            if account.kind == "google":
                await pool.refresh(account)
            else:
                await pool.refresh_quota(account)
        except (GoogleError, CatalogError) as e:
            return f"{e.verdict.error_class}: {e.verdict.message}"
        finally:
            await pool.flush()
        return None

    async def check(self, call: Call) -> Answer:
        account = self.account(call.params["id"])
        model = _object(call.body).get("model")
        if model is not None and not isinstance(model, str):
            raise ApiError(400, "model: must be a model name", field="model")
        report = await Checker(self.pool, model=model or None).check(account)
        await self.pool.flush()
        return Answer({**report.as_json(), "account": self.row(account.id)})

    async def begin_login(self, call: Call) -> Answer:
        body = _object(call.body)
        config = self.cx.settings.config
        assert config is not None
        redirect = _origin(body.get("origin"), call.origin) + CALLBACK
        try:
            url = self.logins.begin(config, redirect, body.get("label") or None)
        except login.LoginError as e:
            raise ApiError(400, str(e)) from None
        return Answer({"url": url, "redirect_uri": redirect})

    async def finish_login(self, query: dict[str, str], raw_query: str) -> tuple[Account | None, str | None]:
        """Google's redirect back to the dashboard: (the account added or renewed, None), or
        (None, why not)."""
        started = self.logins.take(query.get("state", ""))
        if started is None:
            return None, "this sign-in is unknown or too old; start it again from the dashboard"
        config = self.cx.settings.config
        assert config is not None
        try:
            code = login.code_from("?" + raw_query, started.pkce.state)
            found = await login.complete(config, code, started.pkce, started.redirect_uri)
        except login.LoginError as e:
            return None, str(e)
        home = self.cx.settings.home
        account, _ = await self.change_files(lambda: login.save(home, found, started.label))
        return account, None

    # --- usage ---------------------------------------------------------------------------------------
    async def stats(self, call: Call) -> Answer:
        try:
            since = stats.parse_since(call.query.get("since", "24h"))
            by = stats.parse_by(call.query.get("by", ",".join(stats.DEFAULT_BY)))
        except Exception as e:  # argparse.ArgumentTypeError: its text says what is allowed
            raise ApiError(400, str(e)) from None
        report = await asyncio.to_thread(stats.report, self.cx.ledger_file(), since, by)
        return Answer(report.to_json())

    async def usage(self, call: Call) -> Answer:
        return Answer(await self._series(call))

    async def _series(self, call: Call) -> dict[str, Any]:
        range_name, by = call.query.get("range", "24h"), call.query.get("by", "model")
        try:
            return await asyncio.to_thread(stats.series, self.cx.ledger_file(), range_name, by)
        except ValueError as e:
            raise ApiError(400, str(e), field="range" if "range" in str(e) else "by") from None

    async def chart(self, call: Call) -> Answer:
        data = await self._series(call)
        buckets, step = data["buckets"], data["step"]
        width = _whole(call.query, "width") or charts.WIDTH
        hours = f"{step / 3600:g} h" if step < 86400 else "day"
        what = call.params["chart"]
        if what == "tokens":
            names = list(data["tokens"])
            series = [charts.Series(data["labels"].get(n, n), data["tokens"][n], c) for n, c in zip(names, charts.colours(len(names)))]
            svg = charts.stacked_bars(buckets, step, series, title=f"Tokens per {hours} by {data['by']}", width=width)
        elif what == "requests":
            ok = [r - e for r, e in zip(data["requests"], data["errors"])]
            series = [charts.Series("answered", ok, "s0"), charts.Series("errors", data["errors"], "err")]
            svg = charts.stacked_bars(buckets, step, series, title=f"Requests and errors per {hours}", width=width)
        else:
            series = [
                charts.Series(label, data[key], colour) for label, key, colour in (
                    ("latency p50", "latency_p50", "s0"), ("latency p95", "latency_p95", "s1"),
                    ("first byte p50", "ttfb_p50", "s2"), ("first byte p95", "ttfb_p95", "s3"),
                )
            ]
            svg = charts.lines(buckets, step, series, title=f"Latency and time to first byte per {hours}", unit=" ms", width=width)
        return Answer(svg, content_type="image/svg+xml")

    async def requests(self, call: Call) -> Answer:
        filters = {k: v for k, v in call.query.items() if k in history.FILTERS}
        before, after = _whole(call.query, "before"), _whole(call.query, "after")
        limit = _whole(call.query, "limit")
        limit = 50 if limit is None else limit
        try:
            rows = await asyncio.to_thread(history.rows, self.cx.ledger_file(), filters, before=before, after=after, limit=limit)
        except history.HistoryError as e:
            raise ApiError(400, str(e)) from None
        more = len(rows) == limit
        return Answer({"rows": self.with_links(rows), "next_before": rows[-1]["id"] if rows and more else None,
                       "mitmweb": self.cx.mitmweb()})

    async def request_choices(self, call: Call) -> Answer:
        since = _since(call.query.get("since", "7d"))
        return Answer(await asyncio.to_thread(history.choices, self.cx.ledger_file(), since))

    async def requests_csv(self, call: Call) -> Answer:
        since = _since(call.query.get("since", call.query.get("range", "24h")))
        filters = {k: v for k, v in call.query.items() if k in history.FILTERS}
        try:
            text = await asyncio.to_thread(history.to_csv, self.cx.ledger_file(), since, time.time(), filters)
        except history.HistoryError as e:
            raise ApiError(400, str(e)) from None
        name = time.strftime("switchyard-requests-%Y%m%d-%H%M.csv")
        return Answer(text, content_type="text/csv; charset=utf-8", headers={"content-disposition": f'attachment; filename="{name}"'})

    # --- settings and connecting ---------------------------------------------------------------------
    async def get_config(self, call: Call) -> Answer:
        return Answer(await self._config_view())

    async def _config_view(self) -> dict[str, Any]:
        path = self.cx.settings.home.config_file
        try:
            current = await asyncio.to_thread(_load, path)
        except ConfigError as e:
            raise ApiError(400, str(e), fields=e.fields) from None
        applied = self.cx.settings.config or current
        return editable.view(current, applied, self.cx.started() or applied)

    async def edit_config(self, call: Call) -> Answer:
        changes = _object(call.body)
        path = self.cx.settings.home.config_file
        try:
            saved = await asyncio.to_thread(editable.edit, path, changes)
        except ConfigError as e:
            raise ApiError(400, str(e), fields=e.fields) from None
        running = self.cx.settings.config
        if running is not None:
            self.cx.apply_config(editable.apply(running, saved))
        return Answer(await self._config_view())

    async def connect(self, call: Call) -> Answer:
        pool = self.cx.pool()
        served = sorted(pool.catalogue()) if pool is not None else []
        config = self.cx.settings.config
        auth = config is not None and config.proxy.effective_auth_mode != "off"
        setup = snippets.Setup(
            call.origin, KEY_PLACEHOLDER if auth else "switchyard", served,
            resolve=pool.resolve if pool is not None else (lambda name: name),
            background=bool(config is not None and config.routing.background_model),
        )
        return Answer({
            "base_url": call.origin, "auth_required": auth, "key_placeholder": KEY_PLACEHOLDER if auth else None,
            "models": served, "clients": snippets.setups(setup),
        })


# method, path, handler; the first match wins
ENDPOINTS: list[tuple[str, re.Pattern[str], Handler]] = [
    (method, re.compile(pattern), handler)
    for method, pattern, handler in [
        ("GET", r"/api/overview", Api.overview),
        ("GET", r"/api/accounts", Api.list_accounts),
        ("POST", r"/api/accounts", Api.add_account),
        ("POST", r"/api/accounts/import", Api.import_accounts),
        ("POST", r"/api/accounts/login", Api.begin_login),
        ("POST", r"/api/accounts/refresh", Api.refresh_all),
        ("GET", r"/api/accounts/(?P<id>[^/]+)", Api.get_account),
        ("PATCH", r"/api/accounts/(?P<id>[^/]+)", Api.set_account),
        ("DELETE", r"/api/accounts/(?P<id>[^/]+)", Api.remove),
        ("POST", r"/api/accounts/(?P<id>[^/]+)/enable", Api.enable),
        ("POST", r"/api/accounts/(?P<id>[^/]+)/disable", Api.disable),
        ("POST", r"/api/accounts/(?P<id>[^/]+)/refresh", Api.refresh),
        ("POST", r"/api/accounts/(?P<id>[^/]+)/check", Api.check),
        ("GET", r"/api/stats", Api.stats),
        ("GET", r"/api/usage", Api.usage),
        ("GET", r"/api/usage/(?P<chart>tokens|requests|latency)\.svg", Api.chart),
        ("GET", r"/api/requests", Api.requests),
        ("GET", r"/api/requests/choices", Api.request_choices),
        ("GET", r"/api/requests\.csv", Api.requests_csv),
        ("GET", r"/api/config", Api.get_config),
        ("PATCH", r"/api/config", Api.edit_config),
        ("GET", r"/api/connect", Api.connect),
    ]
]
EVENTS = "/api/events"  # the live stream: answered by the Dashboard addon itself (it is streamed)


def find(method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
    """The handler for a request and its path parameters; None when no endpoint has the path.
    Raises ApiError(405) when the path exists for other methods."""
    allowed = []
    for endpoint_method, pattern, handler in ENDPOINTS:
        if (match := pattern.fullmatch(path)) is None:
            continue
        if endpoint_method == method:
            return handler, match.groupdict()
        allowed.append(endpoint_method)
    if path == EVENTS:
        allowed.append("GET")
    if allowed:
        raise ApiError(405, f"{method} is not allowed on {path}: use {', '.join(sorted(set(allowed)))}")
    return None


def flow_link(web: str, flow_id: str) -> str:
    """A flow in mitmweb: its list page, with the flow selected."""
    return f"{web}#/flows/{flow_id}/request"


def _summary(totals: dict[str, Any]) -> dict[str, Any]:
    keys = ("requests", "errors", "retried", "input_tokens", "output_tokens", "cached_tokens", "p50_latency_ms", "p95_latency_ms", "avg_ttfb_ms")
    return {k: totals.get(k) for k in keys}


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _whole(query: dict[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise ApiError(400, f"{name}: must be a whole number (got {value!r})", field=name)
    return int(value)


def _since(text: str) -> float:
    try:
        return stats.parse_since(text)
    except Exception as e:
        raise ApiError(400, str(e), field="since") from None


def _origin(asked: Any, reached: str) -> str:
    """The gateway's origin for Google to send the browser back to: the page's own (so the
    page's stored key is still there), when it names this gateway on a loopback address."""
    if isinstance(asked, str):
        parts = urlsplit(asked)
        reached_parts = urlsplit(reached)
        host = (parts.hostname or "").lower()
        shown = f"[{host}]" if ":" in host else host
        if (
            parts.scheme == "http" and parts.port == reached_parts.port and not parts.path.strip("/")
            and (shown in LOOPBACK or host == reached_parts.hostname)
        ):
            return f"http://{shown}:{parts.port}"
    return reached


def _load(path: Path) -> Config:
    return config_file.load(path)
