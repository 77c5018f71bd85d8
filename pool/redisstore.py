"""The shared store in Redis (`[cluster] redis_url`): what replicas of one gateway share.

Every key starts with `switchyard:`. Account records are JSON in one hash, each change numbered
(`seq`, and `changed`: account -> the change that last touched it), so a replica asks once per
request "what changed since N?" together with its session's binding and the accounts' live
leases: one Lua call, one round trip. Anything that needs atomicity (a record newer than the one
there, a lease under max_concurrent, a probe, a client key's window) is one Lua script.

Redis is an aid, never a dependency: each call has a short timeout, and a failure marks the store
degraded (said once in the log and on /healthz), after which every call answers locally at once
(`Shared`'s behaviour) until a background ping finds Redis again; then the pool republishes what
it holds, so a Redis that restarted empty converges again. The URL's password is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .accounts import AccountStore
from .paths import Home
from .shared import Claim, News, Shared, TokenRefresh
from .state import StateFile
from .urls import mask_url, scrub

log = logging.getLogger("switchyard.cluster")

P = "switchyard:"
OP_TIMEOUT = 0.5  # seconds any one Redis call may take before the replica goes on alone
PING_EVERY = 1.0  # seconds between liveness checks (and reconnect attempts)
TOKEN_WAIT = 20.0  # seconds a replica waits for another's token refresh before doing its own
TOKEN_POLL = 0.05  # seconds between looks at a refresh another replica is doing
LOCK_TTL = 30.0  # seconds a token-refresh lock outlives a replica that died holding it
FAILURES = (RedisError, OSError, asyncio.TimeoutError, ConnectionError)
CLI_TIMEOUT = 3.0  # seconds the CLI waits for Redis before it changes this host only
_MISSING: Any = object()

PULL = """
local p, since, session, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local epoch = redis.call('GET', p .. 'epoch')
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', p .. 'epoch', epoch)
end
if epoch ~= ARGV[6] then since = 0 end
local seq = tonumber(redis.call('GET', p .. 'seq') or '0')
local ids, records = {}, {}
if seq > since then
  ids = redis.call('ZRANGEBYSCORE', p .. 'changed', '(' .. since, '+inf')
  if #ids > 0 then records = redis.call('HMGET', p .. 'state', unpack(ids)) end
end
local bound, ttl = false, 0
if session ~= '' then
  bound = redis.call('GET', p .. 'session:' .. session)
  if bound then ttl = redis.call('PTTL', p .. 'session:' .. session) end
end
local counts = {}
for i = 7, #ARGV do counts[#counts + 1] = redis.call('ZCOUNT', p .. 'leases:' .. ARGV[i], now, '+inf') end
local rev = tonumber(redis.call('GET', p .. 'accounts-rev') or '0')
return {epoch, seq, ids, records, bound, ttl, counts, rev}
"""

PUSH = """
local p, n = ARGV[1], tonumber(ARGV[2])
local i = 3
for _ = 1, n do
  local id, cleared, updated, record = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3]
  i = i + 4
  local stamp = redis.call('HGET', p .. 'stamps', id)
  local newer = true
  if stamp then
    local c, u = string.match(stamp, '([^ ]+) ([^ ]+)')
    c, u = tonumber(c), tonumber(u)
    newer = cleared > c or (cleared == c and updated > u)
  end
  if newer then
    local seq = redis.call('INCR', p .. 'seq')
    redis.call('HSET', p .. 'state', id, record)
    redis.call('HSET', p .. 'stamps', id, ARGV[i - 3] .. ' ' .. ARGV[i - 2])
    redis.call('ZADD', p .. 'changed', seq, id)
  end
end
while i <= #ARGV do
  redis.call('SET', p .. 'session:' .. ARGV[i], ARGV[i + 1], 'PX', ARGV[i + 2])
  i = i + 3
end
return 1
"""

CLAIM = """
local leases, probe = KEYS[1], KEYS[2]
local now, ttl, lease, limit, probing = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1'
if probing and not redis.call('SET', probe, lease, 'NX', 'PX', ttl) then return 0 end
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  if redis.call('ZCARD', leases) >= limit then
    if probing then redis.call('DEL', probe) end
    return 0
  end
  redis.call('ZADD', leases, now + ttl, lease)
  redis.call('PEXPIRE', leases, ttl)
end
return 1
"""

RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
if KEYS[2] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""

UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

# A client key's request: rpm over a window of admissions, tpm over a window of spent tokens (member
# "tokens:nonce"), tokens per day in one counter. Returns {limit, seconds to wait} or {} when admitted.
ADMIT = """
local requests, tokens, day = KEYS[1], KEYS[2], KEYS[3]
local now, window, rpm, tpm, daily, day_end = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', requests, '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', tokens, '-inf', now - window)
if rpm > 0 and redis.call('ZCARD', requests) >= rpm then
  local first = redis.call('ZRANGE', requests, 0, 0, 'WITHSCORES')
  return {'rpm', tostring(tonumber(first[2]) + window - now)}
end
if tpm > 0 then
  local spent = redis.call('ZRANGE', tokens, 0, -1, 'WITHSCORES')
  local total = 0
  for i = 1, #spent, 2 do total = total + tonumber(string.match(spent[i], '^(%d+)')) end
  if total >= tpm then
    local left, at = total, now
    for i = 1, #spent, 2 do
      left = left - tonumber(string.match(spent[i], '^(%d+)'))
      at = tonumber(spent[i + 1])
      if left < tpm then break end
    end
    return {'tpm', tostring(at + window - now)}
  end
end
if daily > 0 and tonumber(redis.call('GET', day) or '0') >= daily then
  return {'daily_tokens', tostring(day_end - now)}
end
redis.call('ZADD', requests, now, ARGV[7])
redis.call('PEXPIRE', requests, math.ceil(window * 1000) + 1000)
return {}
"""


class RedisShared(Shared):
    name = "redis"

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = mask_url(url)
        self._redis: aioredis.Redis | None = None
        self._up = False
        self._ever = False
        self._republish: list[Callable[[], Awaitable[None]]] = []
        self._watcher: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._writes: set[asyncio.Task] = set()  # blob writes a caller's next turn may need
        self._scripts: dict[str, Any] = {}

    # --- life ----------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self._up

    def health(self) -> str | None:
        return "ok" if self._up else "degraded"

    def on_reconnect(self, republish: Callable[[], Awaitable[None]]) -> None:
        self._republish.append(republish)

    def start(self) -> None:
        if self._watcher is not None:
            return
        self._redis = aioredis.Redis.from_url(
            self.url, socket_timeout=OP_TIMEOUT, socket_connect_timeout=OP_TIMEOUT,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
        )
        self._scripts = {
            name: self._redis.register_script(text)
            for name, text in (("pull", PULL), ("push", PUSH), ("claim", CLAIM), ("release", RELEASE),
                               ("unlock", UNLOCK), ("admit", ADMIT))
        }
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self._background:
            await asyncio.wait(list(self._background), timeout=OP_TIMEOUT)
        if self._redis is not None:
            try:
                await self._redis.aclose()
            except FAILURES:
                pass

    async def _watch(self) -> None:
        """Pings Redis: finds it (again) when it is away, notices its loss when idle."""
        while True:
            try:
                assert self._redis is not None
                await asyncio.wait_for(self._redis.ping(), OP_TIMEOUT)
            except FAILURES as e:
                if self._up:
                    self._lost(e)
                elif not self._ever:
                    self._ever = True
                    log.warning("Redis at %s is not reachable (%s): serving from local state until it is",
                                self.shown, self._why(e))
            except Exception:
                log.exception("watching Redis failed")
            else:
                if not self._up:
                    self._up = True
                    log.info("%s Redis at %s: state is shared with the other replicas",
                             "back with" if self._ever else "sharing state through", self.shown)
                    self._ever = True
                    for republish in self._republish:
                        try:
                            await republish()
                        except Exception:
                            log.exception("republishing to Redis failed")
            await asyncio.sleep(PING_EVERY)

    def _why(self, e: BaseException) -> str:
        return scrub(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__, self.url)

    def _lost(self, e: BaseException) -> None:
        """Once per outage: the log says so, and every call answers locally until Redis is back."""
        if self._up:
            self._up = False
            log.warning("lost Redis at %s (%s): serving from local state, reconnecting in the background",
                        self.shown, self._why(e))

    async def _call(self, make: Callable[[], Awaitable[Any]], fallback: Any = _MISSING) -> Any:
        """One Redis call, bounded; its fallback when Redis is away or fails."""
        if not self._up:
            return fallback
        try:
            return await asyncio.wait_for(make(), OP_TIMEOUT)
        except FAILURES as e:
            self._lost(e)
            return fallback

    def _later(self, make: Callable[[], Awaitable[Any]], tracked: set[asyncio.Task] | None = None) -> None:
        """A call whose answer nobody waits for (releases, counters, blobs)."""
        if not self._up:
            return
        task = asyncio.get_running_loop().create_task(self._call(make))
        for tasks in (self._background, tracked):
            if tasks is not None:
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    async def settle(self) -> None:
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=OP_TIMEOUT)

    # --- account records, sessions, leases ----------------------------------------------------------
    async def pull(self, since: int, epoch: str, session: str | None, limited: Iterable[str]) -> News | None:
        fresh_epoch = secrets.token_hex(8)
        args = [P, since, session or "", int(time.time() * 1000), fresh_epoch, epoch, *limited]
        found = await self._call(lambda: self._scripts["pull"](args=args), None)
        if found is None:
            return None
        got_epoch, seq, ids, records, bound, ttl, counts, rev = found
        news = News(epoch=_text(got_epoch), seq=int(seq), accounts_rev=int(rev))
        news.records = {_text(i): r for i, r in zip(ids, records) if r is not None}
        if bound:
            news.session, news.session_ttl = _text(bound), max(int(ttl), 0) / 1000
        news.leases = dict(zip((str(a) for a in args[6:]), (int(n) for n in counts)))
        return news

    async def push(self, records: dict[str, tuple[float, float, bytes]], sessions: dict[str, tuple[str, float]]) -> bool:
        if not records and not sessions:
            return True
        args: list[Any] = [P, len(records)]
        for account_id, (cleared, updated, data) in records.items():
            args += [account_id, repr(cleared), repr(updated), data]
        for key, (account_id, ttl) in sessions.items():
            args += [key, account_id, max(int(ttl * 1000), 1)]
        return await self._call(lambda: self._scripts["push"](args=args), False) is not False

    @staticmethod
    def _claim_keys(claim: Claim) -> list[str]:
        probe = f"{P}probe:{claim.account_id}:{claim.probe}" if claim.probe is not None else ""
        return [f"{P}leases:{claim.account_id}", probe]

    async def claim(self, claim: Claim, ttl: float) -> bool:
        args = [int(time.time() * 1000), int(ttl * 1000), claim.lease_id, claim.limit or 0, int(claim.probe is not None)]
        got = await self._call(lambda: self._scripts["claim"](keys=self._claim_keys(claim), args=args), 1)
        return bool(got)

    def release(self, claim: Claim) -> None:
        self._later(lambda: self._scripts["release"](keys=self._claim_keys(claim), args=[claim.lease_id]))

    async def renew(self, claims: Iterable[Claim], ttl: float) -> None:
        claims = list(claims)
        if not claims or self._redis is None:
            return
        redis, until = self._redis, int((time.time() + ttl) * 1000)

        async def run() -> None:
            async with redis.pipeline(transaction=False) as pipe:
                for claim in claims:
                    leases, probe = self._claim_keys(claim)
                    if claim.limit:
                        pipe.zadd(leases, {claim.lease_id: until})
                        pipe.pexpire(leases, int(ttl * 1000))
                    if probe:
                        pipe.set(probe, claim.lease_id, px=int(ttl * 1000))
                await pipe.execute()

        await self._call(run)

    # --- credentials ------------------------------------------------------------------------------------
    async def token(self, account_id: str, stale: str | None, margin: float, refresh: TokenRefresh) -> tuple[str, float]:
        assert self._redis is not None
        redis, key, lock = self._redis, f"{P}token:{account_id}", f"{P}token-lock:{account_id}"
        mine = secrets.token_hex(8)
        give_up = time.monotonic() + TOKEN_WAIT
        while True:
            found = await self._call(lambda: redis.get(key))
            if found is _MISSING:
                return await refresh()
            if found:
                data = json.loads(found)
                if data["token"] != stale and data["expires_at"] - margin > time.time():
                    return data["token"], data["expires_at"]
            locked = await self._call(lambda: redis.set(lock, mine, nx=True, px=int(LOCK_TTL * 1000)))
            if locked is _MISSING or time.monotonic() > give_up:
                return await refresh()
            if locked:
                break
            await asyncio.sleep(TOKEN_POLL)  # another replica is refreshing: its token comes shortly
        try:
            token, expires_at = await refresh()
            data = json.dumps({"token": token, "expires_at": expires_at})
            await self._call(lambda: redis.set(key, data, pxat=max(int(expires_at * 1000), int(time.time() * 1000) + 1)))
            return token, expires_at
        finally:
            await self._call(lambda: self._scripts["unlock"](keys=[lock], args=[mine]))

    # --- the accounts list ----------------------------------------------------------------------------------
    async def get_accounts(self) -> tuple[int, bytes] | None:
        assert self._redis is not None
        redis = self._redis

        async def run() -> Any:
            async with redis.pipeline(transaction=True) as pipe:
                return await pipe.get(f"{P}accounts-rev").get(f"{P}accounts").execute()

        found = await self._call(run, None)
        if found is None or found[1] is None:
            return None
        return int(found[0] or 0), found[1]

    async def put_accounts(self, data: bytes) -> int | None:
        assert self._redis is not None
        redis = self._redis

        async def run() -> Any:
            async with redis.pipeline(transaction=True) as pipe:
                return await pipe.set(f"{P}accounts", data).incr(f"{P}accounts-rev").execute()

        done = await self._call(run, None)
        return int(done[1]) if done is not None else None

    # --- client-key counters ------------------------------------------------------------------------------------
    @staticmethod
    def _rate_keys(key_id: str, day: tuple[float, float]) -> list[str]:
        base = f"{P}rate:{key_id}:"
        return [base + "requests", base + "tokens", f"{base}day:{int(day[0])}"]

    async def admit(self, key_id: str, limits: tuple[int, int, int], window: float, now: float, day: tuple[float, float]) -> tuple[str, float] | None | bool:
        args = [repr(now), repr(window), *limits, repr(day[1]), f"{now!r}:{secrets.token_hex(4)}"]
        found = await self._call(lambda: self._scripts["admit"](keys=self._rate_keys(key_id, day), args=args), False)
        if found is False:
            return False
        if not found:
            return None
        return _text(found[0]), float(found[1])

    def spend(self, key_id: str, tokens: int, now: float, day: tuple[float, float]) -> None:
        if self._redis is None:
            return
        redis, (_, tokens_key, day_key) = self._redis, self._rate_keys(key_id, day)

        async def run() -> None:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.zadd(tokens_key, {f"{tokens}:{secrets.token_hex(4)}": now})
                pipe.expire(tokens_key, 3600)
                pipe.incrby(day_key, tokens)
                pipe.expireat(day_key, int(day[1]) + 3600)
                await pipe.execute()

        self._later(run)

    def seed_day(self, key_id: str, tokens: int, day: tuple[float, float]) -> None:
        """The ledger's count for today, unless a replica already keeps one (it is the same day's)."""
        if self._redis is None:
            return
        redis, day_key = self._redis, self._rate_keys(key_id, day)[2]
        self._later(lambda: redis.set(day_key, tokens, nx=True, exat=int(day[1]) + 3600))

    # --- blobs ------------------------------------------------------------------------------------------------------
    async def get_blobs(self, space: str, keys: list[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        assert self._redis is not None
        redis = self._redis
        found = await self._call(lambda: redis.mget([f"{P}{space}:{k}" for k in keys]), None)
        if not found:
            return {}
        return {k: v for k, v in zip(keys, found) if v is not None}

    def put_blobs(self, space: str, items: dict[str, bytes], ttl: float) -> None:
        if not items or self._redis is None:
            return
        redis = self._redis

        async def run() -> None:
            async with redis.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(f"{P}{space}:{key}", value, ex=max(int(ttl), 1))
                await pipe.execute()

        self._later(run, self._writes)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def mirrored_accounts(home: Home, url: str, warn: Callable[[str], None]) -> Iterator[None]:
    """An `accounts` command on any host changes every replica: the shared list comes into this
    host's file first, and what the command changed (the list, a record it cleared) goes back.
    Without Redis the change stays local, and this host's gateway publishes it when Redis is back."""
    import redis as syncredis

    client = syncredis.Redis.from_url(url, socket_timeout=CLI_TIMEOUT, socket_connect_timeout=CLI_TIMEOUT)
    store, states = AccountStore(home.accounts_file), StateFile(home.state_file)
    try:
        data = client.get(f"{P}accounts")
        if data is not None:
            store.replace(data)
    except FAILURES as e:
        warn(f"Redis at {mask_url(url)} is not reachable ({scrub(str(e), url)}): this change stays on this host until its gateway reaches Redis again")
        client.close()
        yield
        return
    before_accounts = store.dump()
    before = {k: (v.cleared_at, v.updated_at) for k, v in states.load().accounts.items()}
    try:
        yield
    finally:
        try:
            store.load()
            if store.dump() != before_accounts:
                with client.pipeline(transaction=True) as pipe:
                    pipe.set(f"{P}accounts", store.dump()).incr(f"{P}accounts-rev").execute()
            args: list[Any] = [P, 0]
            for account_id, record in states.load().accounts.items():
                stamp = (record.cleared_at, record.updated_at)
                if stamp > before.get(account_id, (-1.0, -1.0)):
                    args += [account_id, repr(stamp[0]), repr(stamp[1]), record.model_dump_json()]
                    args[1] += 1
            if args[1]:
                client.register_script(PUSH)(args=args)
        except FAILURES as e:
            warn(f"the change could not be published to Redis at {mask_url(url)} ({scrub(str(e), url)}); this host's gateway will")
        finally:
            client.close()
