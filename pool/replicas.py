"""The pool's side of sharing: what it sends to the store and takes from it (see `shared`).

The pool keeps deciding from its local view; this keeps that view in step with the other
replicas: before a request it asks what changed (records newer than its own replace them, the
newest record of an account wins everywhere), after one it sends what it changed, and it holds
shared leases and probes for the accounts that need them. When the store comes back, or comes
back empty, everything the pool holds is sent again. Alone (`Shared`), every method returns at
once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING

from .shared import Claim, News, Shared
from .state import AccountState, Session

if TYPE_CHECKING:
    from .pool import Lease, Pool

log = logging.getLogger("switchyard.cluster")

LEASE_TTL = 15.0  # seconds a shared lease or probe outlives a replica that stopped renewing it
RENEW_EVERY = LEASE_TTL / 3
HELD_ELSEWHERE = 0.1  # seconds an account another replica holds counts as busy before asking again
POLL = 0.05  # seconds between looks while waiting for a slot another replica holds


class Replicas:
    def __init__(self, pool: Pool, shared: Shared) -> None:
        self.pool = pool
        self.shared = shared
        self.epoch = ""
        self.seq = 0
        self._pushed: dict[str, tuple[float, float]] = {}  # account -> (cleared_at, updated_at) sent
        self._sessions: dict[str, Session] = {}  # bindings not sent yet
        self._elsewhere: dict[str, int] = {}  # account -> leases other replicas hold
        self._held: dict[str, float] = {}  # account -> until when (monotonic) another holds it
        self._claims: dict[str, Claim] = {}  # lease id -> this replica's live claims
        self._renewed = 0.0
        self._accounts_rev = -1  # the shared list's revision this replica has
        self._accounts_seen: object = None  # the accounts file's signature when last in step
        self._adopting: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        shared.on_reconnect(self.republish)

    # --- what the pool asks ----------------------------------------------------------------------
    def elsewhere(self, account_id: str) -> int:
        return self._elsewhere.get(account_id, 0) if self._elsewhere else 0

    def held(self, account_id: str) -> bool:
        return bool(self._held) and self._held.get(account_id, 0.0) > time.monotonic()

    async def catch_up(self, session: str | None = None) -> None:
        """What the other replicas changed, and the session's binding: one round trip."""
        if not self.shared.active:
            return
        pool = self.pool
        key = session if session is not None and pool.config.routing.scheduling == "cache_first" else None
        limited = [a.id for a in pool.accounts if a.max_concurrent is not None]
        news = await self.shared.pull(self.seq, self.epoch, key, limited)
        if news is not None:
            self._take(news, key)

    def _take(self, news: News, session: str | None) -> None:
        pool = self.pool
        if self.epoch and news.epoch != self.epoch:
            log.warning("Redis lost the shared state (restarted empty?): publishing this replica's again")
            self._spawn(self.republish())
        self.epoch, self.seq = news.epoch, news.seq
        for account_id, raw in news.records.items():
            try:
                theirs = AccountState.model_validate_json(raw)
            except ValueError:
                continue
            ours = pool.state.accounts.get(account_id)
            self._pushed[account_id] = (theirs.cleared_at, theirs.updated_at)
            if ours is not None and not theirs.newer_than(ours):
                continue
            if ours is not None:
                for scope, cd in theirs.cooldowns.items():
                    mine = ours.cooldowns.get(scope)
                    cd.probing = mine is not None and mine.probing and mine.until == cd.until
            pool.adopt(account_id, theirs, ours)
        if session is not None and news.session is not None:
            bound = pool.state.sessions.get(session)
            if bound is None or bound.account_id != news.session:
                pool.state.sessions[session] = Session(account_id=news.session, expires_at=time.time() + news.session_ttl)
        own: dict[str, int] = {}
        for claim in self._claims.values():
            if claim.limit is not None:
                own[claim.account_id] = own.get(claim.account_id, 0) + 1
        self._elsewhere = {a: n - own.get(a, 0) for a, n in news.leases.items() if n > own.get(a, 0)}
        if news.accounts_rev != self._accounts_rev and self._adopting is None:
            self._adopting = self._spawn(self._adopt_accounts(news.accounts_rev))

    def bound(self, session: str, binding: Session) -> None:
        if self.shared.active:
            self._sessions[session] = binding

    async def push(self) -> None:
        """Sends the records this replica changed and its new session bindings."""
        if not self.shared.active:
            return
        records: dict[str, tuple[float, float, bytes]] = {}
        for account_id, record in self.pool.state.accounts.items():
            stamp = (record.cleared_at, record.updated_at)
            if stamp > self._pushed.get(account_id, (-1.0, -1.0)):
                records[account_id] = (*stamp, record.model_dump_json().encode())
        now = time.time()
        sessions = {k: (s.account_id, s.expires_at - now) for k, s in self._sessions.items() if s.expires_at > now}
        if not records and not sessions:
            return
        self._sessions = {}
        if await self.shared.push(records, sessions):
            for account_id, (cleared, updated, _) in records.items():
                self._pushed[account_id] = (cleared, updated)
        else:
            self._sessions.update({k: v for k, v in self.pool.state.sessions.items() if k in sessions})

    # --- leases ----------------------------------------------------------------------------------
    async def claim(self, lease: Lease) -> bool:
        account = lease.account
        if (account.max_concurrent is None and lease.probe is None) or not self.shared.active:
            return True
        claim = Claim(account.id, secrets.token_hex(8), account.max_concurrent, lease.probe)
        if await self.shared.claim(claim, LEASE_TTL):
            lease.claim = self._claims[claim.lease_id] = claim
            return True
        self._held[account.id] = time.monotonic() + HELD_ELSEWHERE
        return False

    def release(self, lease: Lease) -> None:
        if lease.claim is not None and self._claims.pop(lease.claim.lease_id, None) is not None:
            self.shared.release(lease.claim)

    # --- background -------------------------------------------------------------------------------
    async def tick(self) -> None:
        """The pool's housekeeping round: news, changes, lease renewals, the accounts list."""
        if not self.shared.active:
            return
        await self.catch_up()
        await self.push()
        now = time.monotonic()
        if self._claims and now - self._renewed >= RENEW_EVERY:
            self._renewed = now
            await self.shared.renew(list(self._claims.values()), LEASE_TTL)
        store = self.pool.store
        if self._accounts_seen is not None and store.revision != self._accounts_seen:
            await self._publish_accounts()

    async def republish(self) -> None:
        """The store is (back) up, maybe empty: everything this replica holds goes to it again."""
        await self._reconcile_accounts()
        self._pushed.clear()
        now = time.time()
        self._sessions.update({k: s for k, s in self.pool.state.sessions.items() if s.expires_at > now})
        self.epoch = ""  # read everything it has
        await self.catch_up()
        await self.push()
        await self.shared.renew(list(self._claims.values()), LEASE_TTL)

    async def _reconcile_accounts(self) -> None:
        """Joining: the shared list wins, unless this replica's file changed while Redis was away
        (or Redis has none): then this one's goes out."""
        store = self.pool.store
        changed_alone = self._accounts_seen is not None and store.revision != self._accounts_seen
        found = await self.shared.get_accounts()
        if found is None or changed_alone:
            await self._publish_accounts()
        elif found[0] != self._accounts_rev:
            self._install(*found)

    async def _adopt_accounts(self, rev: int) -> None:
        try:
            found = await self.shared.get_accounts()
            if found is not None:
                self._install(*found)
        finally:
            self._adopting = None

    def _install(self, rev: int, data: bytes) -> None:
        store = self.pool.store
        try:
            store.replace(data)
        except Exception as e:
            log.warning("the shared accounts list could not be taken in: %s", e)
            return
        self._accounts_rev, self._accounts_seen = rev, store.revision
        self.pool.accounts_changed()

    async def _publish_accounts(self) -> None:
        store = self.pool.store
        seen = store.revision
        rev = await self.shared.put_accounts(store.dump())
        if rev is not None:
            self._accounts_rev, self._accounts_seen = rev, seen

    def _spawn(self, work) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
