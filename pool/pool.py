"""The pool: which accounts may serve a model now, in which order, and what each failure costs.

It joins the user's accounts (`accounts.json`) with what the gateway learned about them
(`state.json`): cooldowns, quota, tokens. It never talks mitmproxy; `dispatch.py` drives it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import httpx

from . import google
from .accounts import Account, AccountStore, Kind
from .config import Config
from .health import ErrorClass, Verdict
from .paths import Home
from .state import ACCOUNT_SCOPE, AccountState, Cooldown, LastError, Session, State, StateFile

log = logging.getLogger("switchyard.pool")

REFRESH_MARGIN = 90.0  # seconds before expiry at which an access token is renewed
SAVE_EVERY = 1.0  # seconds between state writes at most
QUOTA_EVERY = 600.0  # seconds between quota refreshes of a Google account


@dataclass(slots=True)
class Selection:
    ranked: list[Account]  # may serve now, best first
    serving: int = 0  # accounts that serve the model at all (enabled)
    earliest: float | None = None  # when the first cooling one recovers
    busy: bool = False  # some are healthy but at their max_concurrent


@dataclass(slots=True)
class Lease:
    """One account doing one request: counted in flight until released."""

    account: Account
    model: str
    started: float = field(default_factory=time.monotonic)
    probe: str | None = None  # the cooldown key this request probes
    released: bool = False


class Pool:
    def __init__(self, config: Config, home: Home, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        self.store = AccountStore(home.accounts_file)
        self.state_file = StateFile(home.state_file)
        self.state: State = self.state_file.load()
        self.store.load()
        self._in_flight: dict[str, int] = {}
        self._latency: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._slot_freed: asyncio.Event | None = None
        self._dirty = False
        self._saved_at = 0.0
        self._quota_tasks: dict[str, asyncio.Task] = {}

    # --- the accounts ------------------------------------------------------------------------
    @property
    def accounts(self) -> list[Account]:
        return self.store.accounts

    def account_state(self, account_id: str) -> AccountState:
        return self.state.of(account_id)

    def in_flight(self, account_id: str) -> int:
        return self._in_flight.get(account_id, 0)

    def serves(self, account: Account, model: str, now: float) -> bool:
        """Whether the account can serve the model at all (cooldowns aside)."""
        if not account.enabled:
            return False
        if account.kind == "google":
            quota = self.state.of(account.id).quota
            if quota:
                info = quota.get(model)
                if info is None:
                    return False
                return not (info.remaining == 0 and info.reset_at is not None and info.reset_at > now)
        return account.serves(model)

    def servable_models(self) -> list[str]:
        """Model names callers can ask for: what the accounts really list, plus exact globs."""
        names: set[str] = set()
        for account in self.accounts:
            if not account.enabled:
                continue
            quota = self.state.of(account.id).quota if account.kind == "google" else {}
            names.update(quota)
            names.update(g for g in account.models if not any(ch in g for ch in "*?["))
        return sorted(names)

    # --- choosing ------------------------------------------------------------------------------
    def select(
        self,
        model: str,
        *,
        session: str | None = None,
        exclude: Iterable[str] = (),
        kinds: Collection[Kind] | None = None,
    ) -> Selection:
        now = time.time()
        excluded = set(exclude)
        selection = Selection(ranked=[])
        for account in self.accounts:
            if account.id in excluded or (kinds is not None and account.kind not in kinds):
                continue
            if not self.serves(account, model, now):
                continue
            selection.serving += 1
            state = self.state.of(account.id)
            cooldown = state.cooling(model, now)
            if cooldown is not None:
                if selection.earliest is None or cooldown.until < selection.earliest:
                    selection.earliest = cooldown.until
                continue
            if self._probe_in_flight(state, model):
                continue
            if account.max_concurrent is not None and self.in_flight(account.id) >= account.max_concurrent:
                selection.busy = True
                continue
            selection.ranked.append(account)
        selection.ranked.sort(key=lambda a: self._rank_key(a, model))
        if session is not None and self.config.routing.scheduling == "cache_first":
            self._stick(selection.ranked, session, now)
        return selection

    def _rank_key(self, account: Account, model: str) -> tuple:
        """Lower is better. Priority first; within a priority, what the scheduling mode values."""
        in_flight = self.in_flight(account.id)
        state = self.state.of(account.id)
        if self.config.routing.scheduling == "performance_first":
            return (account.priority, in_flight, self._latency.get(account.id, 0.0), state.last_used_at)
        quota = state.quota.get(model)
        remaining = quota.remaining if quota is not None and quota.remaining is not None else 1.0
        # Coarse quota buckets, then least recently used: spreads load, prefers fuller accounts.
        return (account.priority, in_flight, -round(remaining * 5), state.last_used_at, random.random())

    def _stick(self, ranked: list[Account], session: str, now: float) -> None:
        sticky = self.state.sessions.get(session)
        if sticky is None or sticky.expires_at <= now:
            return
        for i, account in enumerate(ranked):
            if account.id == sticky.account_id and account.priority == ranked[0].priority:
                ranked.insert(0, ranked.pop(i))
                return

    @staticmethod
    def _probe_in_flight(state: AccountState, model: str) -> bool:
        return any(
            (cd := state.cooldowns.get(key)) is not None and cd.probing for key in (ACCOUNT_SCOPE, model)
        )

    async def wait_for_slot(self, timeout: float) -> None:
        """Waits until some request releases its account (for max_concurrent), or `timeout`."""
        if self._slot_freed is None:
            self._slot_freed = asyncio.Event()
        event = self._slot_freed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass

    # --- leases and outcomes ---------------------------------------------------------------------
    def begin(self, account: Account, model: str) -> Lease:
        now = time.time()
        state = self.state.of(account.id)
        lease = Lease(account=account, model=model)
        for key in (ACCOUNT_SCOPE, model):
            cd = state.cooldowns.get(key)
            if cd is not None and cd.until <= now:
                cd.probing = True
                lease.probe = key
                break
        state.last_used_at = now
        self._in_flight[account.id] = self.in_flight(account.id) + 1
        return lease

    def release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        account_id = lease.account.id
        self._in_flight[account_id] = max(self.in_flight(account_id) - 1, 0)
        if lease.probe is not None:
            cd = self.state.of(account_id).cooldowns.get(lease.probe)
            if cd is not None:
                cd.probing = False
        if self._slot_freed is not None:
            self._slot_freed.set()
            self._slot_freed = None

    def succeed(self, lease: Lease, *, session: str | None = None) -> None:
        """A good answer clears the account's cooldowns for this model and account-wide."""
        account_id = lease.account.id
        state = self.state.of(account_id)
        for key in (ACCOUNT_SCOPE, lease.model):
            if state.cooldowns.pop(key, None) is not None:
                self._touch(state)
        elapsed = time.monotonic() - lease.started
        previous = self._latency.get(account_id)
        self._latency[account_id] = elapsed if previous is None else 0.8 * previous + 0.2 * elapsed
        if session is not None:
            ttl = self.config.routing.sticky_ttl
            self.state.sessions[session] = Session(account_id=account_id, expires_at=time.time() + ttl)
            self._dirty = True
        self.release(lease)

    def fail(self, lease: Lease, verdict: Verdict) -> None:
        self.penalize(lease.account, lease.model, verdict)
        self.release(lease)

    def penalize(self, account: Account, model: str, verdict: Verdict) -> None:
        """Records the failure and cools (or parks) what the error class says."""
        now = time.time()
        state = self.state.of(account.id)
        policy = verdict.policy
        state.last_error = LastError(
            at=now, error_class=verdict.error_class, message=verdict.message, status=verdict.status, model=model
        )
        if verdict.validation_url:
            state.validation_url = verdict.validation_url
        if policy.disable:
            self.disable(account, f"{verdict.error_class}: {verdict.message}")
            log.info("account %s disabled: %s", account.name, verdict.message)
        elif policy.scope is not None:
            key = ACCOUNT_SCOPE if policy.scope == "account" else model
            previous = state.cooldowns.get(key)
            failures = previous.failures + 1 if previous is not None else 1
            cooldown = Cooldown(
                until=now + verdict.cooldown(failures),
                error_class=verdict.error_class,
                message=verdict.message,
                failures=failures,
            )
            state.cooldowns[key] = cooldown
            log.info("account %s cooling (%s, %s) for %.0fs", account.name, key, verdict.error_class, cooldown.until - now)
        self._touch(state)

    def disable(self, account: Account, reason: str) -> None:
        try:
            self.store.modify(account.id, enabled=False, disabled_reason=reason)
        except Exception as e:  # the file may have gone; the in-memory view must still change
            log.warning("could not record that account %s is disabled: %s", account.name, e)
            account.enabled = False
            account.disabled_reason = reason

    def _touch(self, state: AccountState) -> None:
        state.updated_at = time.time()
        self._dirty = True

    # --- credentials ----------------------------------------------------------------------------
    def _lock(self, account_id: str) -> asyncio.Lock:
        lock = self._locks.get(account_id)
        if lock is None:
            lock = self._locks[account_id] = asyncio.Lock()
        return lock

    async def access_token(self, account: Account, *, force: bool = False) -> str:
        """A live access token; one refresh per account at a time, ~90 s before expiry."""
        state = self.state.of(account.id)
        stale = state.access_token
        async with self._lock(account.id):
            fresh = state.access_token is not None and state.access_expires_at - REFRESH_MARGIN > time.time()
            if fresh and not (force and state.access_token == stale):
                return state.access_token  # type: ignore[return-value]
            upstream = self.config.upstreams.antigravity
            client_id, client_secret = upstream.oauth_client
            token = await google.refresh_token(self.client, upstream.token_url, client_id, client_secret, account.secret)
            state.access_token = token.access_token
            state.access_expires_at = token.expires_at
            self._touch(state)
            if token.refresh_token and token.refresh_token != account.secret:
                self.store.modify(account.id, secret=token.refresh_token)
            return token.access_token

    async def project(self, account: Account, access_token: str) -> str:
        state = self.state.of(account.id)
        if account.project:
            return account.project
        if state.project:
            return state.project
        async with self._lock(account.id):
            if state.project:
                return state.project
            project = await google.load_code_assist(self.client, self.config.upstreams.antigravity.endpoints, access_token)
            state.project = project
            self._touch(state)
            return project

    async def refresh_quota(self, account: Account) -> None:
        token = await self.access_token(account)
        project = await self.project(account, token)
        quota = await google.fetch_available_models(
            self.client, self.config.upstreams.antigravity.endpoints, token, project
        )
        state = self.state.of(account.id)
        state.quota = quota
        state.quota_fetched_at = time.time()
        self._touch(state)

    async def refresh(self, account: Account) -> None:
        """Token, project and quota, now (the CLI's `accounts refresh`)."""
        if account.kind != "google":
            return
        try:
            await self.access_token(account, force=True)
            await self.refresh_quota(account)
        except google.GoogleError as e:
            self.penalize(account, "*", e.verdict)
            raise

    # --- keeping in step with the files ------------------------------------------------------------
    def sync(self) -> None:
        """Picks up CLI changes and writes what changed; cheap enough to call twice a second."""
        if self.store.changed():
            try:
                self.store.load()
            except Exception as e:
                log.warning("%s", e)
        if self.state_file.changed():
            self.state_file.merge_from_disk(self.state)
        if self._dirty and time.monotonic() - self._saved_at >= SAVE_EVERY:
            self.save()

    def save(self) -> None:
        self._dirty = False
        self._saved_at = time.monotonic()
        self.state_file.save(self.state, live_ids={a.id for a in self.accounts})

    def refresh_quotas_due(self) -> None:
        """Starts a background quota refresh for Google accounts whose figures are old."""
        now = time.time()
        for account in self.accounts:
            if account.kind != "google" or not account.enabled or account.id in self._quota_tasks:
                continue
            state = self.state.of(account.id)
            if now - state.quota_fetched_at < QUOTA_EVERY * random.uniform(0.9, 1.1):
                continue
            task = asyncio.get_running_loop().create_task(self._quota_quietly(account))
            self._quota_tasks[account.id] = task
            task.add_done_callback(lambda _t, aid=account.id: self._quota_tasks.pop(aid, None))

    async def _quota_quietly(self, account: Account) -> None:
        try:
            await self.refresh_quota(account)
        except google.GoogleError as e:
            if e.verdict.error_class is ErrorClass.INVALID_GRANT:
                self.penalize(account, "*", e.verdict)
            else:
                state = self.state.of(account.id)
                state.quota_fetched_at = time.time()  # try again at the next interval, not at once
                log.info("quota of %s not refreshed: %s", account.name, e.verdict.message)
        except Exception:
            log.exception("quota refresh of %s failed", account.name)

    async def run(self) -> None:
        """The pool's background life: file sync and quota refresh."""
        while True:
            try:
                self.sync()
                self.refresh_quotas_due()
            except Exception:
                log.exception("pool housekeeping failed")
            await asyncio.sleep(0.5)
