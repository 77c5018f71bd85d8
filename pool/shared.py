"""What replicas of one gateway must share, behind one small interface.

A pool alone keeps everything in its own memory and files; that is `Shared`, whose every method
is today's local behaviour at no cost (no I/O, no import of a Redis client). With `[cluster]
redis_url`, `pool.redisstore.RedisShared` keeps the same things in Redis: account records
(cooldowns and their reasons, quota snapshots, tokens, errors), probe ownership, sticky sessions,
in-flight leases, token refreshes, client-key counters, the accounts list and small blobs
(Responses history, thought signatures). Each of its methods falls back to these local answers
when Redis is unreachable, so losing Redis never costs a request.

The pool consults the store where it decides (`Pool.catch_up`, `claim`, `flush`, `access_token`)
and merges what it learns into its local view, so selecting an account stays a local, synchronous
computation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

TokenRefresh = Callable[[], Awaitable[tuple[str, float]]]  # -> (access token, expires at)


@dataclass(slots=True)
class News:
    """What the other replicas changed since the pool last looked (`Shared.pull`)."""

    epoch: str  # the store's identity: a new one means it lost its data (republish everything)
    seq: int  # the last change seen; the next pull asks for what came after it
    records: dict[str, bytes] = field(default_factory=dict)  # account id -> AccountState JSON
    session: str | None = None  # the account the asked-for session is bound to
    session_ttl: float = 0.0  # seconds that binding has left
    leases: dict[str, int] = field(default_factory=dict)  # account id -> live leases (all replicas)
    accounts_rev: int = 0  # the shared accounts list's revision


@dataclass(frozen=True, slots=True)
class Claim:
    """One request's hold on a shared account: a lease (max_concurrent) and maybe the probe."""

    account_id: str
    lease_id: str
    limit: int | None  # the account's max_concurrent
    probe: str | None  # the cooldown scope this request probes


class Shared:
    """The pool alone: nothing leaves the process."""

    name = "local"

    @property
    def active(self) -> bool:
        """Whether shared state is reachable now (when not, callers use their local state)."""
        return False

    def health(self) -> str | None:
        """What `/healthz` says under "cluster": nothing when alone."""
        return None

    def on_reconnect(self, republish: Callable[[], Awaitable[None]]) -> None:
        """`republish` runs whenever the store comes back (or lost its data)."""

    def start(self) -> None:
        """Starts background work (reconnecting); call on the running loop."""

    async def close(self) -> None:
        pass

    # --- account records, sessions, leases ------------------------------------------------------
    async def pull(self, since: int, epoch: str, session: str | None, limited: Iterable[str]) -> News | None:
        return None

    async def push(self, records: dict[str, tuple[float, float, bytes]], sessions: dict[str, tuple[str, float]]) -> bool:
        """Records (cleared_at, updated_at, JSON): the newest of each account wins. Sessions:
        key -> (account id, seconds to live). False when they did not get there."""
        return True

    async def claim(self, claim: Claim, ttl: float) -> bool:
        """A slot (and the probe) on the account across replicas; False when another holds it."""
        return True

    def release(self, claim: Claim) -> None:
        """Gives the slot and probe back (in the background)."""

    async def renew(self, claims: Iterable[Claim], ttl: float) -> None:
        """Keeps the live claims of this replica from expiring (they do when it dies)."""

    # --- credentials --------------------------------------------------------------------------------
    async def token(self, account_id: str, stale: str | None, margin: float, refresh: TokenRefresh) -> tuple[str, float]:
        """A live access token for the account: one the replicas share if there is one newer
        than `stale` (the one a 401 refused) and valid beyond `margin`, else refreshed by one
        replica for all (`refresh`)."""
        return await refresh()

    # --- the accounts list --------------------------------------------------------------------------
    async def get_accounts(self) -> tuple[int, bytes] | None:
        return None

    async def put_accounts(self, data: bytes) -> int | None:
        """Publishes the accounts list; its new revision (None: not published)."""
        return None

    # --- client-key counters ------------------------------------------------------------------------
    async def admit(self, key_id: str, limits: tuple[int, int, int], window: float, now: float, day: tuple[float, float]) -> tuple[str, float] | None | bool:
        """Counts a request of the key against (rpm, tpm, daily tokens; 0 = none) across
        replicas: None when admitted, (limit, seconds to wait) when refused, False when the
        store cannot tell (the caller counts locally)."""
        return False

    def spend(self, key_id: str, tokens: int, now: float, day: tuple[float, float]) -> None:
        pass

    def seed_day(self, key_id: str, tokens: int, day: tuple[float, float]) -> None:
        pass

    # --- blobs (Responses history, thought signatures) ------------------------------------------------
    async def get_blobs(self, space: str, keys: list[str]) -> dict[str, bytes]:
        return {}

    def put_blobs(self, space: str, items: dict[str, bytes], ttl: float) -> None:
        pass

    async def settle(self) -> None:
        """Waits (briefly) until the blobs put so far are stored: a caller's next turn may go
        to another replica as soon as it has this answer."""


def open_store(redis_url: str) -> Shared:
    """The store for a config: Redis when a URL is given (imported only then), else local."""
    if not redis_url:
        return Shared()
    from .redisstore import RedisShared

    return RedisShared(redis_url)
