"""`GET /api/events`: server-sent events for open dashboard pages — the accounts whenever their
state changes, and the ledger's new rows as requests finish.

One watcher serves every page, and only while some page listens: it compares a cheap fingerprint
of the pool each half second (a tuple of numbers) and reads the ledger only after a request has
finished, so an idle page costs a heartbeat comment every 20 s (with a ledger in PostgreSQL that
other replicas write too, it also looks every `SHARED_EVERY` ticks). A stream ends itself after ten
minutes (mitmweb keeps a streamed body until its flow ends) and the page reconnects at once,
asking for the rows after the last one it has: nothing is missed in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any

from mitmproxy import http

from pool import history, usagedb
from pool.usagedb import Target

from . import trace

log = logging.getLogger("switchyard.dashboard")

TICK = 0.5  # seconds between looks at the pool while a page listens
HEARTBEAT = 20.0  # seconds of silence before a comment line (proxies, and a dead page is noticed)
SEGMENT = 600.0  # seconds one stream lasts before the page reconnects
QUEUE = 64  # events a slow page may fall behind before its stream is closed (it reconnects)
ROWS = 200  # ledger rows per event at most
LEDGER_LOOKS = 6  # ticks the watcher keeps looking for a finished request's row (the writer is a thread)
SHARED_EVERY = 4  # ticks between looks at a ledger other replicas write (their rows come unannounced)


def event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()


class Live:
    def __init__(
        self,
        accounts: Callable[[], list[dict[str, Any]]],
        fingerprint: Callable[[], Hashable],
        ledger_file: Callable[[], Target | None],
        decorate: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] = lambda rows: rows,
    ) -> None:
        self.accounts = accounts
        self.fingerprint = fingerprint
        self.ledger_file = ledger_file
        self.decorate = decorate  # adds what a page shows with each row (its mitmweb link)
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._looks = 0
        self._unreadable = False

    @property
    def listeners(self) -> int:
        return len(self._subscribers)

    # --- the Monitor hands over every finished request ---------------------------------------
    def observe(self, flow: http.HTTPFlow, t: trace.Trace) -> None:
        if self._subscribers:
            self._looks = LEDGER_LOOKS

    # --- one page's stream ------------------------------------------------------------------
    async def stream(self, after: int | None) -> AsyncIterator[bytes]:
        """The events for one page: a hello with the accounts, the rows after `after` (what a
        reconnecting page missed), then changes as they come."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE)
        self._subscribers.add(queue)
        self._start()
        started = time.monotonic()
        try:
            yield b"retry: 1000\n\n" + event("hello", {"accounts": self.accounts(), "listeners": len(self._subscribers)})
            if after is not None and (path := self.ledger_file()) is not None:
                try:
                    missed = await asyncio.to_thread(history.rows, path, after=after, limit=ROWS)
                except usagedb.errors():  # the watcher says so, and sends the rows when it can
                    missed = []
                if missed:
                    yield event("requests", self.decorate(missed[::-1]))
            while (left := SEGMENT - (time.monotonic() - started)) > 0:
                try:
                    item = await asyncio.wait_for(queue.get(), min(HEARTBEAT, left))
                except TimeoutError:
                    yield b": ping\n\n"
                    continue
                if item is None:
                    return
                yield item
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        for queue in list(self._subscribers):
            self._offer(queue, None)
        if self._watcher is not None:
            self._watcher.cancel()

    # --- the watcher --------------------------------------------------------------------------
    def _start(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        seen = self.fingerprint()
        shown = json.dumps(self.accounts(), sort_keys=True)
        path = self.ledger_file()
        cursor = await self._new_rows(path, None) if path is not None else None
        shared = path is not None and usagedb.is_postgres(path)
        ticks = 0
        while self._subscribers:
            await asyncio.sleep(TICK)
            ticks += 1
            try:
                now = self.fingerprint()
                if now != seen:
                    seen = now
                    rows = self.accounts()
                    text = json.dumps(rows, sort_keys=True)
                    if text != shown:
                        shown = text
                        self._broadcast(event("accounts", rows))
                if path is not None and (self._looks or (shared and ticks % SHARED_EVERY == 0)):
                    self._looks = max(self._looks - 1, 0)
                    cursor = await self._new_rows(path, cursor)
            except Exception:  # the watcher must outlive a bad moment (a bug)
                log.exception("live updates failed for a moment")

    async def _new_rows(self, path: Target, cursor: int | None) -> int | None:
        """Sends the rows after `cursor` (None: where to start is not known yet, the newest row
        says); the cursor after them. A ledger that cannot be read (a locked file, PostgreSQL
        away) is said once, and tried again at the next look."""
        try:
            if cursor is None:
                return await asyncio.to_thread(history.latest_id, path)
            new = await asyncio.to_thread(history.rows, path, after=cursor, limit=ROWS)
        except usagedb.errors() as e:
            if not self._unreadable:
                self._unreadable = True
                log.warning("live updates wait: the usage ledger cannot be read: %s", e)
            return cursor
        self._unreadable = False
        if new:
            self._broadcast(event("requests", self.decorate(new[::-1])))
            return new[0]["id"]
        return cursor

    def _broadcast(self, item: bytes) -> None:
        for queue in list(self._subscribers):
            self._offer(queue, item)

    def _offer(self, queue: asyncio.Queue[bytes | None], item: bytes | None) -> None:
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            # Too far behind: end its stream (the page reconnects and catches up from its cursor).
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(None)
            self._subscribers.discard(queue)
