"""Sending one request upstream: account after account, until one answers well.

Everything here happens before the caller gets a byte, so a rate-limited account costs the
caller a little time and nothing else. The first good status ends the loop; its body is left
unread for the caller's side to stream. At most `max_attempts` accounts are tried; within one
account, Google's endpoints are tried in order, an expired token is refreshed once, and a
capacity error is retried once after a short wait — as `health.POLICIES` says. An attempt that
stays silent longer than `first_byte_timeout` (to its status and first event) or, later,
`idle_timeout` (between two pieces of its answer) is a timeout like any other. When every
account that could serve is at its `max_concurrent` (or being probed), the request waits for a
slot instead of failing; a `cache_first` session waits a little for its own account.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from . import google, upstreams
from .accounts import Account, Kind
from .health import ErrorClass, Step, Verdict, classify, network_failure
from .pool import Lease, Pool
from .transport import Response, Transport, TransportError
from .upstreams import Operation

ERROR_BODY_LIMIT = 64 * 1024
CAPACITY_WAIT_CAP = 2.0  # seconds: a capacity error is retried once on the same account after this
STICKY_WAIT = 5.0  # seconds a cache_first session waits for a slot on its own account before moving


@dataclass(slots=True)
class Attempt:
    account_id: str
    account: str  # the account's display name
    endpoint: str  # host of the URL tried
    status: int | None
    outcome: str  # "ok" or an ErrorClass
    ms: float


@dataclass(slots=True)
class Call:
    """What the caller wants, independent of which account will serve it."""

    model: str
    operation: Operation
    stream: bool
    # (dialect, upstream model) -> the body in that dialect; called at most once per pair.
    encode: Callable[[str, str], upstreams.Body]
    session: str | None = None
    kinds: frozenset[Kind] | None = None  # only these kinds of account may serve
    protected: bool = True  # accounts under quota protection may serve (last); see fallbacks.py
    # dialect -> caller headers that upstream must see too (e.g. `anthropic-beta` when an
    # Anthropic caller's body passes through to an Anthropic upstream unchanged).
    forward: dict[str, dict[str, str]] = field(default_factory=dict)
    # Shared by every `send` for this call, so an answer found bad after its status (an empty
    # stream, a body that is not JSON) can go to another account within the same budget.
    attempts: list[Attempt] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)
    deadline: float = 0.0


@dataclass(slots=True)
class Exchange:
    """A good upstream answer whose body has not been read yet."""

    response: Response
    account: Account
    dialect: str
    model: str
    attempts: list[Attempt]
    lease: Lease
    deadline: float  # time.monotonic() by which the whole exchange must end
    streamed: bool = False  # the upstream answers as a stream (also when the caller wants it whole)
    started: float = field(default_factory=time.monotonic)
    first_event_by: float = math.inf  # time.monotonic() by which the first event must be in
    idle: float = math.inf  # seconds the answer may stay silent once it has begun


async def next_chunk(chunks: AsyncIterator[bytes], exchange: Exchange, *, first_event: bool = False) -> bytes | None:
    """The answer's next piece (None at its end), read against the timeouts: before the first
    event `first_byte_timeout` from the attempt's start, after it `idle_timeout` from the last
    piece, and `request_timeout` always. Only time spent waiting on the upstream counts, never
    time the caller takes to read. A timeout raises `TransportError(timeout=True)`."""
    now = time.monotonic()
    if first_event:
        by, limit = exchange.first_event_by, "no first event within first_byte_timeout"
    else:
        by, limit = now + exchange.idle, f"silent for {exchange.idle:g} s mid-answer, past idle_timeout"
    if exchange.deadline <= by:
        by, limit = exchange.deadline, "request_timeout ran out"
    try:
        async with asyncio.timeout(max(by - now, 0)):
            return await anext(chunks, None)
    except TimeoutError:
        raise TransportError(limit, timeout=True) from None


async def read_body(exchange: Exchange) -> bytes:
    """A whole (small, or non-streamed) answer, its pieces read as `next_chunk` reads them."""
    chunks = exchange.response.aiter_bytes()
    body = bytearray()
    while (chunk := await next_chunk(chunks, exchange)) is not None:
        body += chunk
    return bytes(body)


class DispatchError(Exception):
    """No account answered well; carries what the caller should be told."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_class: str | None = None,
        retry_after: float | None = None,
        attempts: list[Attempt] | None = None,
        no_candidates: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_class = error_class
        self.retry_after = retry_after
        self.attempts = attempts or []
        self.no_candidates = no_candidates


class Dispatcher:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    @property
    def transport(self) -> Transport:
        return self.pool.transport

    async def send(self, call: Call) -> Exchange:
        config = self.pool.config
        if not call.deadline:
            call.deadline = time.monotonic() + config.proxy.request_timeout
        deadline, attempts, tried = call.deadline, call.attempts, call.tried
        bodies: dict[tuple[str, str], upstreams.Body] = {}
        last: Verdict | None = None
        sticky_until = time.monotonic() + STICKY_WAIT
        await self.pool.catch_up(call.session)  # other replicas' news (alone: nothing to do)
        while len(tried) < config.routing.max_attempts and time.monotonic() < deadline:
            selection = self.pool.select(call.model, session=call.session, exclude=tried, kinds=call.kinds, protected=call.protected)
            now = time.monotonic()
            if selection.sticky_busy and now < sticky_until:
                await self.pool.wait_for_slot(min(sticky_until, deadline) - now)
                continue
            if not selection.ranked:
                if selection.busy:
                    await self.pool.wait_for_slot(deadline - now)
                    continue
                break
            account = selection.ranked[0]
            lease = self.pool.begin(account, call.model)
            if not await self.pool.claim(lease):  # another replica holds its last slot or its probe
                self.pool.release(lease)
                continue
            tried.add(account.id)
            try:
                result = await self._try_account(call, account, lease, bodies, attempts, deadline)
            except BaseException:
                self.pool.release(lease)
                raise
            if isinstance(result, Exchange):
                return result
            last = result
            self.pool.fail(lease, result)
            if result.policy.step is Step.GIVE_UP:
                raise DispatchError(
                    self._give_up_status(result), self._give_up_message(result),
                    error_class=result.error_class, attempts=attempts,
                )
        raise self._no_answer(call, last, attempts)

    async def send_to(self, account: Account, call: Call) -> Exchange | Verdict:
        """This account and no other (`accounts check`): its answer, or why there is none. The
        outcome counts as any request's would (cooldowns, errors), cooling or not."""
        if not call.deadline:
            call.deadline = time.monotonic() + self.pool.config.proxy.request_timeout
        lease = self.pool.begin(account, call.model)
        try:
            result = await self._try_account(call, account, lease, {}, call.attempts, call.deadline)
        except BaseException:
            self.pool.release(lease)
            raise
        if isinstance(result, Verdict):
            self.pool.fail(lease, result)
        return result

    def reject(self, exchange: Exchange, verdict: Verdict) -> None:
        """The answer was bad after a good status (an empty stream, a refusal inside a 200): the
        account answers for it, and the request moves on unless the verdict says no other
        account would do better (then the caller hears it now)."""
        self.finish(exchange, verdict)
        if verdict.policy.step is Step.GIVE_UP:
            raise DispatchError(
                self._give_up_status(verdict), self._give_up_message(verdict),
                error_class=verdict.error_class, attempts=exchange.attempts,
            )

    def finish(self, exchange: Exchange, verdict: Verdict | None = None, *, session: str | None = None) -> None:
        """The caller's side is done with the answer: a clean end clears cooldowns."""
        if verdict is None:
            self.pool.succeed(exchange.lease, session=session)
            return
        self.pool.fail(exchange.lease, verdict)
        if exchange.attempts and exchange.attempts[-1].account_id == exchange.account.id:
            exchange.attempts[-1].outcome = verdict.error_class

    async def _try_account(
        self,
        call: Call,
        account: Account,
        lease: Lease,
        bodies: dict[tuple[str, str], upstreams.Body],
        attempts: list[Attempt],
        deadline: float,
    ) -> Exchange | Verdict:
        config = self.pool.config
        dialect = upstreams.DIALECTS[account.kind]
        model = call.model
        streamed = upstreams.streams(account, call.operation, call.stream)
        key = (dialect, model)
        if key not in bodies:
            bodies[key] = call.encode(dialect, model)
        body = bodies[key]
        try:
            credential, project = await self._credentials(account)
        except google.GoogleError as e:
            attempts.append(Attempt(account.id, account.name, "oauth", e.verdict.status, e.verdict.error_class, 0.0))
            return e.verdict
        verdict = Verdict(ErrorClass.NETWORK, "no endpoint")
        for base in upstreams.endpoints(account, config):
            refreshed = retried = False
            while True:
                target = upstreams.target(
                    account, base, call.operation, model=model, stream=call.stream, body=body,
                    credential=credential, config=config, project=project, session=call.session,
                )
                target.headers.update(call.forward.get(dialect, {}))
                started = time.monotonic()
                # A stream's status and first event must come within first_byte_timeout; a whole
                # answer's status comes only once the answer is done: request_timeout bounds it.
                first_by = min(started + config.proxy.first_byte_timeout, deadline) if streamed else deadline
                result = await self._post(target, streamed, first_by, deadline)
                ms = (time.monotonic() - started) * 1000
                host = urlsplit(target.url).hostname or "?"
                if not isinstance(result, Verdict) and result.status_code < 400 and not _is_html(result):
                    attempts.append(Attempt(account.id, account.name, host, result.status_code, "ok", ms))
                    self.pool.answered(lease)
                    return Exchange(
                        result, account, dialect, model, attempts, lease, deadline, streamed,
                        first_event_by=first_by, idle=config.proxy.idle_timeout,
                    )
                if isinstance(result, Verdict):
                    verdict = result
                else:
                    verdict = await self._verdict(result, min(deadline, time.monotonic() + config.proxy.idle_timeout))
                attempts.append(Attempt(account.id, account.name, host, verdict.status, verdict.error_class, ms))
                step = verdict.policy.step
                if step is Step.REFRESH and account.kind == "google" and not refreshed:
                    refreshed = True
                    try:
                        credential = await self.pool.access_token(account, force=True)
                    except google.GoogleError as e:
                        return e.verdict
                    continue
                if step is Step.RETRY_SAME and not retried:
                    retried = True
                    wait = min(verdict.retry_after or 1.0, CAPACITY_WAIT_CAP, max(deadline - time.monotonic(), 0))
                    await asyncio.sleep(wait)
                    continue
                break
            if step is not Step.NEXT_ENDPOINT:
                return verdict
        return verdict

    async def _credentials(self, account: Account) -> tuple[str, str | None]:
        if account.kind != "google":
            return account.secret, None
        token = await self.pool.access_token(account)
        return token, await self.pool.project(account)

    async def _post(self, target: upstreams.Target, stream: bool, by: float, deadline: float) -> Response | Verdict:
        """Sends the request; its status must be in by `by` (time.monotonic())."""
        remaining = by - time.monotonic()
        if remaining <= 0:
            return Verdict(ErrorClass.TIMEOUT, "request_timeout reached before the upstream answered")
        body = target.body
        headers = {
            "content-type": body.content_type if isinstance(body, upstreams.Form) else "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            "user-agent": "switchyard",
            **target.headers,
        }
        if isinstance(body, upstreams.Form):
            content = body.content
        else:
            content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            return await self.transport.via(target.proxy).request("POST", target.url, headers=headers, content=content, timeout=remaining)
        except TransportError as e:
            if e.timeout and time.monotonic() >= by - 0.05:  # our limit, not a connect timeout
                e = TransportError("request_timeout ran out" if by >= deadline else "no status within first_byte_timeout", timeout=True)
            return network_failure(e)

    @staticmethod
    async def _verdict(response: Response, by: float) -> Verdict:
        raw = await _error_body(response, by)
        if response.status_code < 400:  # an HTML page (a proxy's or a portal's) where an answer belongs
            title = _TITLE.search(raw)
            page = f" ({' '.join(title.group(1).decode('utf-8', 'replace').split())[:100]})" if title else ""
            return Verdict(ErrorClass.SERVER, f"upstream answered {response.status_code} with an HTML page{page}", response.status_code)
        return classify(response.status_code, response.headers, raw)

    @staticmethod
    def _give_up_status(verdict: Verdict) -> int:
        """A refused request keeps the upstream's 4xx (400, 413, 422 say different things);
        anything else the policy's status."""
        if verdict.error_class is ErrorClass.BAD_REQUEST and verdict.status and 400 <= verdict.status < 500:
            return verdict.status
        return verdict.policy.caller_status

    def _give_up_message(self, verdict: Verdict) -> str:
        if verdict.error_class is ErrorClass.CLIENT_OUTDATED:
            version = self.pool.config.upstreams.antigravity.client_version
            return f"Google refused the Antigravity client version {version} ({verdict.message.strip()}): {verdict.policy.advice}"
        return verdict.message

    def _no_answer(self, call: Call, last: Verdict | None, attempts: list[Attempt]) -> DispatchError:
        """What to tell the caller when no account answered. When accounts were tried, the last
        failure speaks (a timeout is a 504 even if the account now cools); when none could be
        tried, the pool's state does: unknown model, not found everywhere, cooling, or busy."""
        now = time.time()
        selection = self.pool.select(call.model, kinds=call.kinds)
        cooling = not selection.ranked and selection.earliest is not None
        wait = max(math.ceil((selection.earliest or now) - now), 1)
        not_found_everywhere = cooling and selection.cooling_for == {ErrorClass.NOT_FOUND}
        if last is None:
            if selection.serving == 0:
                return DispatchError(
                    404, f"no enabled account serves the model {call.model!r}",
                    error_class=ErrorClass.NOT_FOUND, no_candidates=True,
                )
            if not not_found_everywhere and selection.earliest is not None:
                return DispatchError(
                    429, f"every account that serves {call.model!r} is cooling down; the first recovers in {wait}s",
                    error_class=ErrorClass.RATE_LIMIT, retry_after=wait, attempts=attempts,
                )
        if not_found_everywhere:
            return DispatchError(
                404, f"the model {call.model!r} is not available on any account (the upstreams said not found)",
                error_class=ErrorClass.NOT_FOUND, attempts=attempts,
            )
        if last is None:
            return DispatchError(
                503, f"no account is free to serve {call.model!r} in time", attempts=attempts, no_candidates=True
            )
        status = last.policy.caller_status
        tried = len({a.account_id for a in attempts})
        message = f"{last.message} (after {tried} account{'s' if tried != 1 else ''})"
        retry_after = None
        if status == 429:
            retry_after = wait if cooling else max(math.ceil(last.retry_after or 1), 1)
            if cooling:
                message = f"every account that serves {call.model!r} is cooling down; the first recovers in {wait}s"
        return DispatchError(
            status, message, error_class=last.error_class, retry_after=retry_after, attempts=attempts,
        )


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.I | re.S)


def _is_html(response: Response) -> bool:
    """An HTML page is never an upstream's answer (every upstream speaks JSON or SSE)."""
    return response.headers.get("content-type", "").lower().lstrip().startswith("text/html")


async def _error_body(response: Response, by: float) -> bytes:
    """The start of a refusal's body (enough to read the error, by `by` at the latest), then the
    connection is let go."""
    raw = b""
    try:
        async with asyncio.timeout(max(by - time.monotonic(), 0)):
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) >= ERROR_BODY_LIMIT:
                    break
    except (TransportError, TimeoutError):
        pass
    finally:
        await response.aclose()
    return raw
