"""Conversations kept for OpenAI Responses' `previous_response_id`, bounded in memory."""

from __future__ import annotations

from collections import OrderedDict

from . import estimate
from .translate import canonical as c


class ResponseHistory:
    """The latest conversations by response id; the oldest go first when the budget is spent."""

    def __init__(self, budget_chars: int = 64 * 1024 * 1024, max_entries: int = 2000) -> None:
        self._entries: OrderedDict[str, tuple[list[c.Message], int]] = OrderedDict()
        self._budget = budget_chars
        self._max = max_entries
        self._used = 0

    def put(self, response_id: str, messages: list[c.Message]) -> None:
        size = estimate.chars(messages)
        if size > self._budget:
            return
        self.pop(response_id)
        self._entries[response_id] = (messages, size)
        self._used += size
        while self._used > self._budget or len(self._entries) > self._max:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._used -= dropped

    def get(self, response_id: str) -> list[c.Message] | None:
        entry = self._entries.get(response_id)
        if entry is None:
            return None
        self._entries.move_to_end(response_id)
        return entry[0]

    def pop(self, response_id: str) -> None:
        entry = self._entries.pop(response_id, None)
        if entry is not None:
            self._used -= entry[1]
