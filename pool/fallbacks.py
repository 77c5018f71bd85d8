"""Fallback chains: when no account can serve a model, the same request goes to the next model
`[fallbacks]` names for it — before the caller gets a byte.

"Can serve" is the pool's word: a model falls through when every account that serves it is
cooling (rate limits, an exhausted quota, no capacity), when the upstreams say it is not found
anywhere, or when only accounts under quota protection are left. Protection comes last: the
chain first asks every model of it for an account above `[quota] protect_below`, and only then
goes round again letting protected accounts serve. Anything else (a bad request, an outdated
client, the deadline) ends the request as it would without a chain.

Each model gets the request's full `max_attempts`; the deadline is the request's, shared.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

from .dispatch import Call, DispatchError, Dispatcher, Exchange
from .health import ErrorClass
from .mapping import lookup

# What a model's DispatchError must be to let the next model try.
FALLS_THROUGH = frozenset({ErrorClass.RATE_LIMIT, ErrorClass.QUOTA_EXHAUSTED, ErrorClass.CAPACITY, ErrorClass.NOT_FOUND})
PROTECTED = "quota_protected"  # the reason given when only protected accounts could serve


def models(first: str, table: Mapping[str, list[str]], resolve: Callable[[str], str], *, asked: str | None = None) -> list[str]:
    """`first`, then what `[fallbacks]` lists for it (for the routed name, else the name the
    caller asked for; exact names, then the most specific glob), each resolved as a caller's
    name would be, without repeats."""
    listed = _entry(first, table)
    if listed is None and asked is not None:
        listed = _entry(asked, table)
    chain = [first]
    for name in listed or ():
        model = resolve(name)
        if model not in chain:
            chain.append(model)
    return chain


def _entry(model: str, table: Mapping[str, list[str]]) -> list[str] | None:
    pattern = lookup(model, {p: p for p in table})
    return None if pattern is None else table[pattern]


class Chain:
    """One request's way down its models. `send` is called like `Dispatcher.send` (again after
    a rejected answer, going on where it stood); `fell_back` says from where and why."""

    def __init__(self, dispatcher: Dispatcher, call: Call, models: list[str]) -> None:
        self.dispatcher = dispatcher
        if not call.deadline:
            call.deadline = time.monotonic() + dispatcher.pool.config.proxy.request_timeout
        self.call = call
        if len(models) == 1:
            self._plan = [dataclasses.replace(call, model=models[0])]
        else:
            calls = [dataclasses.replace(call, model=m, tried=set(), protected=False) for m in models]
            self._plan = calls + [dataclasses.replace(c, protected=True) for c in calls]
        self._at = 0
        self.passed: list[tuple[str, str]] = []  # (model, why) of the models passed over, in order
        self._errors: list[tuple[str, DispatchError]] = []

    @property
    def fell_back(self) -> tuple[str, str] | None:
        """(the first model, why it could not serve) when another model serves."""
        current = self._plan[self._at].model
        if current == self._plan[0].model or not self.passed:
            return None
        return self.passed[0]

    async def send(self) -> Exchange:
        while True:
            call = self._plan[self._at]
            if not call.protected and self._only_protected(call):
                self._next(call.model, PROTECTED, None)
                continue
            try:
                return await self.dispatcher.send(call)
            except DispatchError as e:
                if self._at == len(self._plan) - 1 or e.error_class not in FALLS_THROUGH:
                    raise self._final(e) from None
                self._next(call.model, str(e.error_class), e)

    def _only_protected(self, call: Call) -> bool:
        """Nothing but quota-protected accounts could take this model now (the pre-pass skips it)."""
        selection = self.dispatcher.pool.select(call.model, kinds=call.kinds, exclude=call.tried, protected=False)
        return not selection.ranked and not selection.busy and selection.earliest is None and selection.protected > 0

    def _next(self, model: str, why: str, error: DispatchError | None) -> None:
        if not any(m == model for m, _ in self.passed):
            self.passed.append((model, why))
        if error is not None:
            self._errors.append((model, error))
        self._at += 1
        if self._at == len(self._plan):  # only possible when the last step was a skip
            raise self._final(None)

    def _final(self, last: DispatchError | None) -> DispatchError:
        """What the caller hears: an error that ended the chain early as it is (naming the
        fallback it came from); when every model fell through, the first model's own error
        (that is what the caller asked for) with what the others said."""
        first, model = self._plan[0].model, self._plan[min(self._at, len(self._plan) - 1)].model
        if last is not None and last.error_class not in FALLS_THROUGH:
            if model != first:
                last.message = f"{last.message} (from the fallback {model}; {first} could not serve)"
            return last
        if last is not None:
            self._errors.append((model, last))
        if not self._errors:
            return DispatchError(
                429, f"every account that serves {first!r} is under quota protection", error_class=ErrorClass.RATE_LIMIT,
                retry_after=60, attempts=self.call.attempts,
            )
        own = [e for m, e in self._errors if m == first]
        error = own[-1] if own else self._errors[-1][1]
        if len(self._plan) == 1:
            return error
        others = [f"{m} ({why})" for m, why in self.passed if m != first]
        waits = [e.retry_after for _, e in self._errors if e.retry_after is not None]
        return DispatchError(
            error.status, error.message + (f"; the fallbacks could not serve either: {', '.join(others)}" if others else ""),
            error_class=error.error_class, retry_after=min(waits) if waits and error.status == 429 else error.retry_after,
            attempts=error.attempts, no_candidates=error.no_candidates,
        )
