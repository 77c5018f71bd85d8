"""What a caller cannot carry to its next turn, kept for every replica: the Responses history
behind `previous_response_id` and the thought signatures (`signatures.py`).

Each replica keeps both in memory as before; with a shared store, what one replica learns is also
written there (bounded: a TTL on every entry, and no conversation over MAX_HISTORY_BYTES), and a
request that names something this replica never saw looks it up there first, in one round trip.
Alone, every method returns at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Final

from pool.shared import Shared

from .conversations import ResponseHistory
from .signatures import SignatureCache
from .translate import canonical as c

HISTORY_TTL = 24 * 3600.0  # seconds a conversation stays retrievable by previous_response_id
SIGNATURE_TTL = 24 * 3600.0  # seconds a signature stays known to every replica
MAX_HISTORY_BYTES = 8 * 1024 * 1024  # larger conversations stay with the replica that served them

PARTS: Final[dict[str, type]] = {cls.__name__: cls for cls in (c.Text, c.Thinking, c.Image, c.ToolCall, c.ToolResult)}


def encode_messages(messages: list[c.Message]) -> bytes:
    return json.dumps([{"role": m.role, "parts": [_part(p) for p in m.parts]} for m in messages]).encode()


def decode_messages(raw: bytes) -> list[c.Message]:
    return [c.Message(role=m["role"], parts=[_unpart(p) for p in m["parts"]]) for m in json.loads(raw)]


def _part(part: c.Part) -> dict[str, Any]:
    data = {"type": type(part).__name__, **asdict(part)}
    if isinstance(part, c.ToolResult):
        data["content"] = [_part(item) for item in part.content]
    return data


def _unpart(data: dict[str, Any]) -> Any:
    data = dict(data)
    cls = PARTS[data.pop("type")]
    if cls is c.ToolResult:
        data["content"] = [_unpart(item) for item in data["content"]]
    return cls(**data)


class Recall:
    def __init__(self, store: Callable[[], Shared], history: ResponseHistory, signatures: SignatureCache) -> None:
        self.store = store
        self.history = history
        self.signatures = signatures

    async def conversation(self, previous: object) -> None:
        """Brings the conversation `previous_response_id` names here, if another replica has it."""
        store = self.store()
        if not store.active or not isinstance(previous, str) or self.history.get(previous) is not None:
            return
        found = (await store.get_blobs("resp", [previous])).get(previous)
        if found is not None:
            try:
                self.history.put(previous, decode_messages(found))
            except (ValueError, KeyError, TypeError):
                pass

    async def known_signatures(self, request: c.Request) -> None:
        """Brings here the signatures this request's history needs that another replica saw."""
        store = self.store()
        if not store.active:
            return
        for space, keys in self.signatures.unknown(request).items():
            if keys:
                found = await store.get_blobs(space, keys)
                self.signatures.learn(space, {k: tuple(json.loads(v)) for k, v in found.items()})

    def remembered(self, parts: list[c.Part], family: str, response_id: str | None, messages: list[c.Message] | None) -> None:
        """Shares what `Gateway._remember` kept."""
        store = self.store()
        if not store.active:
            return
        for space, items in self.signatures.entries(parts, family).items():
            store.put_blobs(space, {k: json.dumps(v).encode() for k, v in items.items()}, SIGNATURE_TTL)
        if response_id is not None and messages is not None:
            data = encode_messages(messages)
            if len(data) <= MAX_HISTORY_BYTES:
                store.put_blobs("resp", {response_id: data}, HISTORY_TTL)
