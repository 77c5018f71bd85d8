"""The pool: which accounts may serve a model now, in which order, and what each failure costs.

It joins the user's accounts (`accounts.json`) with what the gateway learned about them
(`state.json`): cooldowns, quota, tokens, sticky sessions. It never talks mitmproxy;
`dispatch.py` drives it.

Order of candidates, in every scheduling mode: accounts whose quota for the model is above the
protection threshold first, then by `priority` (lower first); within that, the mode decides:
- `balance`: the least loaded for its weight — load is requests in flight plus recent requests
  (decaying with a 30 s half-life), weight is the quota left for the model, halved after a recent
  failure — so shares follow remaining quota and health, and equal accounts take turns. (The
  pool's view is exact and shared within the process, so the herding that power-of-two-choices
  guards against cannot happen; a deterministic choice is easier to reason about and test.)
- `cache_first`: a session stays on its account for `sticky_ttl` while that account is healthy
  (it waits up to `STICKY_WAIT` for a free slot there); new sessions are placed as in `balance`.
- `performance_first`: the lowest expected wait, (in flight + 1) x recent time to first byte.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field


from . import catalog, google, mapping, models
from .accounts import Account, AccountStore, Kind
from .config import Config
from .health import ErrorClass, Verdict
from .paths import Home
from .replicas import POLL, Replicas
from .shared import Claim, Shared
from .transport import Transport
from .state import ACCOUNT_SCOPE, AccountState, Cooldown, LastError, Session, State, StateFile

log = logging.getLogger("switchyard.pool")

REFRESH_MARGIN = 90.0  # seconds before expiry at which an access token is renewed
SYNC_EVERY = 0.5  # seconds between looks at the files (CLI changes) and state writes
QUOTA_JITTER = 0.1  # quota refreshes are spread by +-10 % of the interval
QUOTA_STARTUP_SPREAD = 5.0  # seconds over which stale catalogues are refreshed at start (none yet: at once)
QUOTA_PARALLEL = 4  # quota fetches at a time
HEALTH_WINDOW = 300.0  # seconds an account's last failure weighs on `balance`
LATENCY_WEIGHT = 0.2  # of a new sample in the time-to-first-byte average
RECENT_HALF_LIFE = 30.0  # seconds: how fast past requests stop counting as load in `balance`
SESSION_SLACK = 60.0  # seconds a session's expiry may run ahead of the file before it is rewritten
MIN_WEIGHT = 0.05  # an account with almost no quota still gets drawn now and then
MODELS_WAIT = 5.0  # seconds a request waits for a new Google account's first model list
MODELS_RETRY = 60.0  # seconds before a failed first model list makes requests wait again
ROUTES_KEPT = 1_000  # resolved model names remembered until a catalogue or the accounts change


@dataclass(slots=True)
class Selection:
    ranked: list[Account]  # may serve now, best first
    serving: int = 0  # accounts that serve the model at all (enabled)
    earliest: float | None = None  # when the first cooling one recovers
    cooling_for: set[str] = field(default_factory=set)  # the error classes of those cooldowns
    busy: bool = False  # some are healthy but at max_concurrent or being probed: a slot will free
    sticky_busy: bool = False  # the session's own account is healthy but at max_concurrent
    protected: int = 0  # left out for being under quota protection (when asked to)


@dataclass(slots=True)
class Lease:
    """One account doing one request: counted in flight until released."""

    account: Account
    model: str
    started: float = field(default_factory=time.monotonic)
    probe: str | None = None  # the cooldown key this request probes
    released: bool = False
    claim: Claim | None = None  # its hold in the shared store, when it took one


class Pool:
    def __init__(self, config: Config, home: Home, transport: Transport, shared: Shared | None = None) -> None:
        self.config = config
        self.transport = transport
        self.shared = shared or Shared()
        self.store = AccountStore(home.accounts_file)
        self.state_file = StateFile(home.state_file)
        self.state: State = self.state_file.load()
        self.store.load()
        self.rng = random.Random()
        self._in_flight: dict[str, int] = {}
        self._latency: dict[str, float] = {}
        self._recent: dict[str, tuple[float, float]] = {}  # account -> (decayed request count, at)
        self._locks: dict[str, asyncio.Lock] = {}
        self._slot_freed: asyncio.Event | None = None
        self._dirty = False
        self._urgent = False
        self._writing = asyncio.Lock()
        self._quota_due: dict[str, float] = {}
        self._quota_tasks: dict[str, asyncio.Task[None]] = {}
        self._models_asked: dict[str, float] = {}  # account id -> when a first model list was sought
        self._quota_slots: asyncio.Semaphore | None = None
        self._routes: dict[str, str] = {}  # caller's model name -> the model routed, see `resolve`
        self._rankers: dict[str, Callable[[list[Account], str], list[Account]]] = {
            "balance": self._balance,
            "cache_first": self._balance,
            "performance_first": self._performance,
        }
        self.replicas = Replicas(self, self.shared)  # after the state: it reads it on (re)connect

    def reconfigure(self, config: Config) -> None:
        """New settings (the dashboard's Settings page): scheduling, sticky TTL, attempts, quota
        protection and the model mapping apply from the next request on."""
        self.config = config
        self._routes.clear()

    # --- the accounts ------------------------------------------------------------------------
    @property
    def accounts(self) -> list[Account]:
        return self.store.accounts

    def transport_for(self, account: Account) -> Transport:
        """The upstream client as this account uses it: through its own proxy, if it has one."""
        return self.transport.via(account.proxy)

    def account_state(self, account_id: str) -> AccountState:
        return self.state.of(account_id)

    def in_flight(self, account_id: str) -> int:
        return self._in_flight.get(account_id, 0)

    def leases(self) -> dict[str, int]:
        """Requests in flight, by account (those with any)."""
        return {account_id: n for account_id, n in self._in_flight.items() if n}

    def serves(self, account: Account, model: str) -> bool:
        """Whether the account can serve the model at all (cooldowns and quota aside): a Google
        account serves what its fetchAvailableModels lists, once known; others their globs."""
        if not account.enabled:
            return False
        if account.kind == "google" and (quota := self.state.of(account.id).quota):
            return model in quota and not models.internal(model)
        return account.serves(model)

    async def know_models(self, timeout: float = MODELS_WAIT) -> None:
        """Waits, bounded, for the catalogues of enabled Google accounts never fetched. Until one
        arrives, what such an account serves is a guess from globs: routing on guesses would send
        a client's own name (claude-opus-4-8) upstream instead of a resolved one, and a model
        list would be empty. After a failed fetch, requests go on the guess for MODELS_RETRY
        seconds instead of waiting."""
        now = time.monotonic()
        waiting = []
        for account in self.accounts:
            if account.kind != "google" or not account.enabled or self.state.of(account.id).quota:
                continue
            task = self._quota_tasks.get(account.id)
            if task is None:
                if now - self._models_asked.get(account.id, -MODELS_RETRY) < MODELS_RETRY:
                    continue
                self._models_asked[account.id] = now
                task = self._start_quota(account)
            waiting.append(task)
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)

    def servable_models(self) -> list[str]:
        """Model names callers can ask for: what the accounts really list, plus exact globs."""
        return sorted(self.catalogue())

    def catalogue(self) -> dict[str, models.Listing]:
        """The pool's models by their own names, with what the catalogues say of each: Google
        accounts' catalogues (internal names never), key accounts' upstream lists within their
        globs, and the exact names among their globs."""
        listing: dict[str, models.Listing] = {}
        for account in self.accounts:
            if not account.enabled:
                continue
            state = self.state.of(account.id)
            if account.kind == "google":
                for name, entry in state.quota.items():
                    if not models.internal(name):
                        listing.setdefault(name, models.Listing()).add(entry)
            else:
                for name in state.listed:
                    if account.serves(name):
                        listing.setdefault(name, models.Listing())
            for glob in account.models:
                if not any(ch in glob for ch in "*?["):
                    listing.setdefault(glob, models.Listing())
        return listing

    def output_limit(self, model: str) -> int | None:
        """The most output tokens every enabled account that lists `model` allows (None: unknown)."""
        limits = [
            entry.max_output_tokens
            for account in self.accounts
            if account.enabled and account.kind == "google"
            and (entry := self.state.of(account.id).quota.get(model)) is not None and entry.max_output_tokens
        ]
        return min(limits) if limits else None

    # --- model names: the pool as routing's `mapping.Offer` ----------------------------------------
    def resolve(self, model: str) -> str:
        """The model to route for a caller's model name (see `mapping`). Resolving by family reads
        every account's catalogue (~0.6 ms with 100 accounts), and clients send the same unserved
        name on every request: the answer is kept until a catalogue or the accounts change."""
        routed = self._routes.get(model)
        if routed is None:
            if len(self._routes) >= ROUTES_KEPT:
                self._routes.clear()
            routed = self._routes[model] = mapping.resolve(model, self.config.model_mapping, self)
        return routed

    def served(self, name: str) -> bool:
        return any(self.serves(account, name) for account in self.accounts)

    def forward(self, name: str) -> str | None:
        for account in self.accounts:
            if account.enabled and (new := self.state.of(account.id).forwards.get(name)) is not None:
                return new
        return None

    def model_names(self) -> dict[str, str | None]:
        return {name: listing.display_name for name, listing in self.catalogue().items()}

    # --- choosing ------------------------------------------------------------------------------
    def select(
        self,
        model: str,
        *,
        session: str | None = None,
        exclude: Iterable[str] = (),
        kinds: Collection[Kind] | None = None,
        protected: bool = True,
    ) -> Selection:
        """The accounts that may serve `model` now, best first; with `protected=False`, none
        under quota protection for it (counted in `Selection.protected` instead)."""
        now = time.time()
        excluded = set(exclude)
        selection = Selection(ranked=[])
        sticky = self._sticky_account(session, now)
        busy: list[Account] = []
        for account in self.accounts:
            if account.id in excluded or (kinds is not None and account.kind not in kinds):
                continue
            if not self.serves(account, model):
                continue
            selection.serving += 1
            if not protected and self._tier(account, model)[0]:
                selection.protected += 1
                continue
            state = self.state.of(account.id)
            if (cooldown := state.cooling(model, now)) is not None:
                selection.cooling_for.add(cooldown.error_class)
                if selection.earliest is None or cooldown.until < selection.earliest:
                    selection.earliest = cooldown.until
            elif self._probe_in_flight(state, model) or self._full(account) or self.replicas.held(account.id):
                busy.append(account)
            else:
                selection.ranked.append(account)
        selection.busy = bool(busy)
        if not selection.ranked:
            selection.sticky_busy = any(a.id == sticky for a in busy)
            return selection
        ranked = self._rankers[self.config.routing.scheduling](selection.ranked, model)
        if sticky is not None:
            best = self._tier(ranked[0], model)
            here = next((a for a in ranked if a.id == sticky), None)
            if here is not None and self._tier(here, model) == best:
                ranked.remove(here)
                ranked.insert(0, here)
            else:
                selection.sticky_busy = any(a.id == sticky and self._tier(a, model) <= best for a in busy)
        selection.ranked = ranked
        return selection

    def _sticky_account(self, session: str | None, now: float) -> str | None:
        if session is None or self.config.routing.scheduling != "cache_first":
            return None
        bound = self.state.sessions.get(session)
        return bound.account_id if bound is not None and bound.expires_at > now else None

    def _full(self, account: Account) -> bool:
        return (
            account.max_concurrent is not None
            and self.in_flight(account.id) + self.replicas.elsewhere(account.id) >= account.max_concurrent
        )

    def _tier(self, account: Account, model: str) -> tuple[bool, int]:
        """Quota-protected accounts last, then by priority: the mode orders within a tier."""
        quota = self.state.of(account.id).quota.get(model)
        low = quota is not None and quota.remaining is not None and quota.remaining < self.config.quota.threshold(model)
        return (low, account.priority)

    def _by_tier(self, accounts: list[Account], model: str, key: Callable[[Account], tuple]) -> list[Account]:
        return sorted(accounts, key=lambda a: (self._tier(a, model), key(a)))

    def _balance(self, accounts: list[Account], model: str) -> list[Account]:
        now = time.monotonic()

        def load_per_weight(a: Account) -> tuple[float, float]:
            load = self.in_flight(a.id) + self._recent_load(a.id, now)
            return (load / self._weight(a, model), self.state.of(a.id).last_used_at)

        return self._by_tier(accounts, model, load_per_weight)

    def _recent_load(self, account_id: str, now: float) -> float:
        count, at = self._recent.get(account_id, (0.0, now))
        return count * 0.5 ** ((now - at) / RECENT_HALF_LIFE)

    def _weight(self, account: Account, model: str) -> float:
        state = self.state.of(account.id)
        quota = state.quota.get(model)
        remaining = quota.remaining if quota is not None and quota.remaining is not None else 1.0
        error = state.last_error
        recent = (
            error is not None
            and time.time() - error.at < HEALTH_WINDOW
            and error.model in (model, ACCOUNT_SCOPE, None)
            and error.error_class != ErrorClass.BAD_REQUEST  # the caller's fault, not the account's
        )
        return max(remaining, MIN_WEIGHT) * (0.5 if recent else 1.0)

    def _performance(self, accounts: list[Account], model: str) -> list[Account]:
        def expected_wait(a: Account) -> tuple[float, int, float]:
            in_flight = self.in_flight(a.id)
            return ((in_flight + 1) * self._latency.get(a.id, 0.0), in_flight, self.state.of(a.id).last_used_at)

        return self._by_tier(accounts, model, expected_wait)

    @staticmethod
    def _probe_in_flight(state: AccountState, model: str) -> bool:
        return any((cd := state.cooldowns.get(key)) is not None and cd.probing for key in (ACCOUNT_SCOPE, model))

    async def wait_for_slot(self, timeout: float) -> None:
        """Waits until some request releases its account (max_concurrent, probes), or `timeout`."""
        if self._slot_freed is None:
            self._slot_freed = asyncio.Event()
        shared = self.shared.active  # a slot another replica frees shows only in its news
        try:
            await asyncio.wait_for(self._slot_freed.wait(), max(min(timeout, POLL) if shared else timeout, 0.0))
        except TimeoutError:
            pass
        if shared:
            await self.replicas.catch_up()

    # --- leases and outcomes ---------------------------------------------------------------------
    def begin(self, account: Account, model: str) -> Lease:
        """The account takes the request; if a cooldown has just ended, this request is its probe."""
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
        started = time.monotonic()
        self._recent[account.id] = (self._recent_load(account.id, started) + 1, started)
        return lease

    async def claim(self, lease: Lease) -> bool:
        """With other replicas: the account's shared slot (max_concurrent) and probe for this
        lease; False when another replica holds them (the caller releases and picks again)."""
        return await self.replicas.claim(lease)

    async def catch_up(self, session: str | None = None) -> None:
        """With other replicas: what they changed (cooldowns, quota, tokens, the session's
        account, their leases), before choosing."""
        await self.replicas.catch_up(session)

    def answered(self, lease: Lease) -> None:
        """The upstream sent a good status: time to first byte, for `performance_first`."""
        elapsed = time.monotonic() - lease.started
        previous = self._latency.get(lease.account.id)
        self._latency[lease.account.id] = elapsed if previous is None else (1 - LATENCY_WEIGHT) * previous + LATENCY_WEIGHT * elapsed

    def release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        account_id = lease.account.id
        self._in_flight[account_id] = max(self.in_flight(account_id) - 1, 0)
        if lease.claim is not None:
            self.replicas.release(lease)
        if lease.probe is not None and (cd := self.state.of(account_id).cooldowns.get(lease.probe)) is not None:
            cd.probing = False
        if self._slot_freed is not None:
            self._slot_freed.set()
            self._slot_freed = None

    def succeed(self, lease: Lease, *, session: str | None = None) -> None:
        """A good answer clears the account's cooldowns for this model and account-wide."""
        account_id = lease.account.id
        state = self.state.of(account_id)
        for key in (ACCOUNT_SCOPE, lease.model):
            if (cleared := state.cooldowns.pop(key, None)) is not None:
                self._touch(state, urgent=True)
                if cleared.error_class == ErrorClass.QUOTA_EXHAUSTED:
                    self._quota_due[account_id] = 0.0  # the quota is back: learn how much
        if session is not None and self.config.routing.scheduling == "cache_first":
            self._bind(session, account_id)
        self.release(lease)

    def _bind(self, session: str, account_id: str) -> None:
        """The session sticks to this account for `sticky_ttl` from now. A chatty session does
        not rewrite the file on every turn: only a new binding, or an expiry a minute on."""
        expires_at = time.time() + self.config.routing.sticky_ttl
        bound = self.state.sessions.get(session)
        self.state.sessions[session] = binding = Session(account_id=account_id, expires_at=expires_at)
        if bound is None or bound.account_id != account_id or expires_at - bound.expires_at > SESSION_SLACK:
            self._dirty = True
            self.replicas.bound(session, binding)

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
            until = now + verdict.cooldown(failures)
            state.cooldowns[key] = Cooldown(until=until, error_class=verdict.error_class, message=verdict.message, failures=failures)
            log.info("account %s cooling (%s, %s) for %.1fs", account.name, key, verdict.error_class, until - now)
            if verdict.error_class is ErrorClass.QUOTA_EXHAUSTED and verdict.retry_after is None:
                self._quota_due[account.id] = 0.0  # no reset time given: fetchAvailableModels has it
        self._touch(state, urgent=True)

    def adopt(self, account_id: str, record: AccountState, previous: AccountState | None) -> None:
        """Another replica's newer record of an account replaces this one's."""
        self.state.accounts[account_id] = record
        if previous is None or previous.quota_fetched_at != record.quota_fetched_at:
            self._routes.clear()
            if record.quota_fetched_at:
                self._quota_due[account_id] = record.quota_fetched_at + self._quota_interval()
        self._dirty = True

    def accounts_changed(self) -> None:
        """The accounts list was replaced (the shared one came in)."""
        self._routes.clear()

    def disable(self, account: Account, reason: str) -> None:
        self._routes.clear()
        try:
            self.store.modify(account.id, enabled=False, disabled_reason=reason)
        except Exception as e:  # the file may have gone; the in-memory view must still change
            log.warning("could not record that account %s is disabled: %s", account.name, e)
            account.enabled = False
            account.disabled_reason = reason

    def _touch(self, state: AccountState, *, urgent: bool = False) -> None:
        """Marks the state for the next write; `urgent` for what `accounts list` shows (cooldowns,
        errors, quota), which `flush` writes before the caller hears of the request."""
        state.updated_at = time.time()
        self._dirty = True
        self._urgent = self._urgent or urgent

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
            state = self.state.of(account.id)  # a merge may have replaced the record meanwhile
            fresh = state.access_token is not None and state.access_expires_at - REFRESH_MARGIN > time.time()
            if fresh and not (force and state.access_token == stale):
                return state.access_token  # type: ignore[return-value]
            refused = state.access_token if force and state.access_token == stale else None
            token, expires_at = await self.shared.token(account.id, refused, REFRESH_MARGIN, lambda: self._refresh_token(account))
            state = self.state.of(account.id)
            state.access_token = token
            state.access_expires_at = expires_at
            self._touch(state)
            return token

    async def _refresh_token(self, account: Account) -> tuple[str, float]:
        """One OAuth refresh (with other replicas: one for all of them, see `Shared.token`)."""
        upstream = self.config.upstreams.antigravity
        client_id, client_secret = upstream.oauth_client
        token = await google.refresh_token(self.transport_for(account), upstream.token_url, client_id, client_secret, account.secret)
        if token.refresh_token and token.refresh_token != account.secret:
            self.store.modify(account.id, secret=token.refresh_token)
        return token.access_token, token.expires_at

    def token_source(self, account: Account) -> google.TokenSource:
        """The account's access tokens, for calls that renew them on a 401."""
        return lambda force: self.access_token(account, force=force)

    async def project(self, account: Account) -> str:
        """The account's Cloud Code project: given by the user, learned before, or asked for
        (onboarding the account when it has none yet), once per account at a time."""
        if account.project:
            return account.project
        if project := self.state.of(account.id).project:
            return project
        async with self._lock("project:" + account.id):
            state = self.state.of(account.id)
            if state.project:
                return state.project
            upstream, token = self.config.upstreams.antigravity, self.token_source(account)
            project, tier = await google.load_code_assist(self.transport_for(account), upstream, token)
            if project is None:
                project = await google.onboard(self.transport_for(account), upstream, token, tier)
                state.onboarded = tier
                log.info("account %s onboarded to Cloud Code (%s): project %s", account.name, tier, project)
            state.project = project
            self._touch(state, urgent=True)
            return project

    # --- quota ------------------------------------------------------------------------------------
    async def refresh_quota(self, account: Account) -> None:
        """Google accounts: quota and models from fetchAvailableModels. Key accounts: the
        upstream's model list, for callers' model lists."""
        if account.kind != "google":
            state = self.state.of(account.id)
            state.listed = await catalog.list_models(self.transport_for(account), account, self.config)
            self._routes.clear()
            state.quota_fetched_at = time.time()
            self._quota_due[account.id] = state.quota_fetched_at + self._quota_interval()
            self._touch(state)
            return
        project = await self.project(account)
        found = await google.fetch_available_models(
            self.transport_for(account), self.config.upstreams.antigravity, self.token_source(account), project
        )
        self.apply_quota(account.id, found)

    def apply_quota(self, account_id: str, found: models.Catalogue) -> None:
        """A new catalogue from fetchAvailableModels. Its reset time is the truth about an
        exhausted model: the cooldown follows it both ways, and ends when the quota is back."""
        now = time.time()
        state = self.state.of(account_id)
        state.quota = found.models
        state.forwards = found.forwards
        self._routes.clear()
        state.quota_fetched_at = now
        for model, info in found.models.items():
            cd = state.cooldowns.get(model)
            if info.remaining == 0 and info.reset_at is not None and info.reset_at > now:
                if cd is None or cd.error_class == ErrorClass.QUOTA_EXHAUSTED or cd.until < info.reset_at:
                    state.cooldowns[model] = Cooldown(
                        until=info.reset_at, error_class=ErrorClass.QUOTA_EXHAUSTED,
                        message="quota exhausted (fetchAvailableModels)", failures=cd.failures if cd else 1,
                    )
            elif cd is not None and cd.error_class == ErrorClass.QUOTA_EXHAUSTED and (info.remaining or 0) > 0:
                del state.cooldowns[model]
        self._quota_due[account_id] = now + self._quota_interval()
        self._touch(state, urgent=True)

    def _quota_interval(self) -> float:
        interval = self.config.quota.refresh_interval
        return interval * self.rng.uniform(1 - QUOTA_JITTER, 1 + QUOTA_JITTER) if interval else float("inf")

    async def refresh(self, account: Account) -> None:
        """Token, project and quota, now (the CLI's `accounts refresh`)."""
        if account.kind != "google":
            return
        try:
            await self.access_token(account, force=True)
            await self.refresh_quota(account)
        except google.GoogleError as e:
            self.penalize(account, ACCOUNT_SCOPE, e.verdict)
            raise

    def refresh_quotas_due(self) -> None:
        """Starts background quota fetches for Google accounts that are due: one per account at a
        time (single flight), a few at a time overall, each account on its own jittered clock."""
        now = time.time()
        for account in self.accounts:
            if not account.enabled or account.id in self._quota_tasks:
                continue
            due = self._quota_due.get(account.id)
            if due is None:
                state = self.state.of(account.id)
                interval = self._quota_interval()
                # No catalogue yet: callers' model lists and routing wait for it, so fetch at once.
                spread = self.rng.uniform(0, min(QUOTA_STARTUP_SPREAD, interval)) if state.quota or state.listed else 0.0
                due = state.quota_fetched_at + interval if now - state.quota_fetched_at < interval else now + spread
                self._quota_due[account.id] = due
            if due > now:
                continue
            self._quota_due[account.id] = now + self._quota_interval()
            self._start_quota(account)

    def _start_quota(self, account: Account) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(self._quota_quietly(account))
        self._quota_tasks[account.id] = task
        task.add_done_callback(lambda _t, aid=account.id: self._quota_tasks.pop(aid, None))
        return task

    async def _quota_quietly(self, account: Account) -> None:
        if self._quota_slots is None:
            self._quota_slots = asyncio.Semaphore(QUOTA_PARALLEL)
        try:
            async with self._quota_slots:
                await self.refresh_quota(account)
        except google.GoogleError as e:
            if e.verdict.policy.disable:
                self.penalize(account, ACCOUNT_SCOPE, e.verdict)
            else:
                log.info("quota of %s not refreshed: %s", account.name, e.verdict.message)
        except catalog.CatalogError as e:
            log.info("model list of %s not fetched: %s", account.name, e.verdict.message)
        except Exception:
            log.exception("quota refresh of %s failed", account.name)

    # --- keeping in step with the files ------------------------------------------------------------
    def sync(self) -> None:
        """Picks up CLI changes to either file (a stat each, unless one changed)."""
        if self.store.changed():
            self._routes.clear()
            try:
                self.store.load()
            except Exception as e:
                log.warning("%s", e)
        if self.state_file.changed():
            self._routes.clear()
            self.state_file.merge_from_disk(self.state)

    async def persist(self) -> None:
        """Writes the state when it changed. The serializing stays on the loop (the state is only
        consistent there); the write and its fsyncs go to a thread. If the CLI wrote meanwhile,
        the next round merges its changes first."""
        async with self._writing:
            if not self._dirty:
                return
            urgent, self._dirty, self._urgent = self._urgent, False, False
            base = self.state_file.seen
            data = self.state_file.prepare(self.state, {a.id for a in self.accounts})
            written = False
            try:
                written = await asyncio.to_thread(self.state_file.write_if_unchanged, data, base)
            finally:
                self._dirty = self._dirty or not written
                self._urgent = self._urgent or (urgent and not written)

    async def flush(self) -> None:
        """Writes a change the user would look for (a cooldown, an error, new quota) now, so
        `switchyard accounts list` run right after a request shows its effect. Requests that
        change nothing of that kind cost nothing here."""
        await self.replicas.push()  # with other replicas: they know before the caller hears
        for _ in range(2):  # a second round when the CLI wrote meanwhile: merge, then write
            if not self._urgent:
                return
            await self.persist()
            if self._urgent:
                self.sync()

    def save(self) -> None:
        """Writes now, on this thread (the CLI, and the gateway when it stops)."""
        self._dirty = self._urgent = False
        self.state_file.save(self.state, live_ids={a.id for a in self.accounts})

    async def run(self) -> None:
        """The pool's background life: file sync, state writes and quota refresh."""
        while True:
            try:
                self.sync()
                await self.replicas.tick()
                await self.persist()
                self.refresh_quotas_due()
            except Exception:
                log.exception("pool housekeeping failed")
            await asyncio.sleep(SYNC_EVERY)
