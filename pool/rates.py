"""Client keys' limits: requests and tokens per minute, tokens per day.

In memory, per gateway process: a sliding window of `window` seconds (a minute; tests shorten
it) for requests and tokens, and a tally per local calendar day for tokens, which the gateway
seeds from the usage ledger when it starts so a restart does not hand out a second day's worth.
A request is counted when it is admitted; its tokens when it ends (so one large answer may take
a key past its limit, and the next request waits). `clock` is injectable for tests.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .keys import ClientKey

MINUTE = 60.0


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: str  # rpm | tpm | daily_tokens
    retry_after: int  # whole seconds until a request would be admitted
    message: str


@dataclass(slots=True)
class _Usage:
    requests: deque[float] = field(default_factory=deque)  # admission times within the window
    tokens: deque[tuple[float, int]] = field(default_factory=deque)  # (when, tokens) within the window
    window_tokens: int = 0
    day: float = 0.0  # the day `day_tokens` counts: from local midnight...
    day_end: float = 0.0  # ...to the next
    day_tokens: int = 0


def day_start(now: float) -> float:
    """Local midnight before `now`."""
    return datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def next_day(now: float) -> float:
    start = datetime.fromtimestamp(day_start(now))
    return (start + timedelta(days=1, hours=3)).replace(hour=0).timestamp()  # DST-proof: land mid-night, then floor


class Rates:
    def __init__(self, *, window: float = MINUTE, clock: Callable[[], float] = time.time) -> None:
        self.window = window
        self.clock = clock
        self._usage: dict[str, _Usage] = {}

    def admit(self, key: ClientKey) -> Refusal | None:
        """Counts a request of `key`, or says which limit refuses it and for how long."""
        now = self.clock()
        usage = self._current(key.id, now)
        if key.rpm is not None and len(usage.requests) >= key.rpm:
            wait = usage.requests[0] + self.window - now
            return self._refuse("rpm", wait, f"this key's limit of {key.rpm} requests per minute is reached")
        if key.tpm is not None and usage.window_tokens >= key.tpm:
            left = usage.window_tokens
            for at, tokens in usage.tokens:  # when enough of the window's tokens will have aged out
                left -= tokens
                if left < key.tpm:
                    break
            return self._refuse("tpm", at + self.window - now, f"this key's limit of {key.tpm} tokens per minute is reached")
        if key.daily_tokens is not None and usage.day_tokens >= key.daily_tokens:
            return self._refuse(
                "daily_tokens", usage.day_end - now,
                f"this key's limit of {key.daily_tokens} tokens per day is reached; it resets at midnight",
            )
        usage.requests.append(now)
        return None

    def spend(self, key_id: str, tokens: int, at: float | None = None) -> None:
        """A request of the key ended having used `tokens` (input + output)."""
        if tokens <= 0:
            return
        now = self.clock() if at is None else at
        usage = self._current(key_id, now)
        usage.tokens.append((now, tokens))
        usage.window_tokens += tokens
        usage.day_tokens += tokens

    def seed_day(self, key_id: str, tokens: int) -> None:
        """Tokens the key used earlier today (from the ledger, at start)."""
        usage = self._current(key_id, self.clock())
        usage.day_tokens += tokens

    def today(self, key_id: str) -> int:
        return self._current(key_id, self.clock()).day_tokens

    def _current(self, key_id: str, now: float) -> _Usage:
        usage = self._usage.get(key_id)
        if usage is None:
            usage = self._usage[key_id] = _Usage()
        start = now - self.window
        while usage.requests and usage.requests[0] <= start:
            usage.requests.popleft()
        while usage.tokens and usage.tokens[0][0] <= start:
            usage.window_tokens -= usage.tokens.popleft()[1]
        if not usage.day <= now < usage.day_end:
            usage.day, usage.day_end, usage.day_tokens = day_start(now), next_day(now), 0
        return usage

    def refusal(self, key: ClientKey, limit: str, wait: float) -> Refusal:
        """The refusal for `limit` of `key`, as `admit` words it (the shared counters answer
        with the limit and the wait only)."""
        messages = {
            "rpm": f"this key's limit of {key.rpm} requests per minute is reached",
            "tpm": f"this key's limit of {key.tpm} tokens per minute is reached",
            "daily_tokens": f"this key's limit of {key.daily_tokens} tokens per day is reached; it resets at midnight",
        }
        return self._refuse(limit, wait, messages[limit])

    @staticmethod
    def _refuse(limit: str, wait: float, message: str) -> Refusal:
        seconds = max(math.ceil(wait), 1)
        return Refusal(limit, seconds, f"{message}; try again in {seconds} s")
