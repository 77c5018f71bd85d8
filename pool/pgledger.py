"""The usage ledger in PostgreSQL (`[usage] database_url`): one table that every replica writes.

As with SQLite (`ledger.py`), `add` only queues the row and a writer thread of its own inserts
them in batches, so the event loop never waits on the database. When PostgreSQL cannot be
reached the rows wait in memory (up to `ledger.QUEUE_MAX`) while the writer retries, and are
written when it is back; the log says so once each way, the URL's password masked.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import astuple
from pathlib import Path
from typing import Any

from .ledger import BATCH_MAX, COLUMNS, PRUNE_EVERY, QUEUE_MAX, Ledger, Record
from .urls import mask_url, scrub

log = logging.getLogger("switchyard.ledger")

RETRY_FIRST = 0.5  # seconds before the first reconnect; doubling up to RETRY_MAX
RETRY_MAX = 10.0
SCHEMA_LOCK = 0x5357_4C44  # the advisory lock two replicas creating the table at once take turns on

DDL = """
CREATE TABLE IF NOT EXISTS requests (
    id BIGSERIAL PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    protocol TEXT NOT NULL,
    operation TEXT NOT NULL,
    requested_model TEXT,
    model TEXT,
    account_id TEXT,
    account TEXT,
    status INTEGER,
    error_class TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    stream BOOLEAN NOT NULL DEFAULT false,
    latency_ms DOUBLE PRECISION,
    ttfb_ms DOUBLE PRECISION,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens BIGINT NOT NULL DEFAULT 0
)
"""
# Every column after the first schema's: added where missing, so an older table catches up.
ADDED = {
    "attempt_errors": "TEXT",
    "key_id": "TEXT", "key_label": "TEXT", "background": "TEXT", "fallback_from": "TEXT", "fallback_reason": "TEXT",
    "images": "INTEGER NOT NULL DEFAULT 0",
    "flow_id": "TEXT",
}
INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"

_ready: set[str] = set()  # databases whose schema this process has seen to
_ready_lock = threading.Lock()


def ensure_schema(conn: Any, url: str) -> None:
    """The table, its columns and index, in one transaction under an advisory lock (replicas
    starting together take turns); once per database per process."""
    with _ready_lock:
        if url in _ready:
            return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(DDL)
        for name, declaration in ADDED.items():
            conn.execute(f"ALTER TABLE requests ADD COLUMN IF NOT EXISTS {name} {declaration}")
        conn.execute("CREATE INDEX IF NOT EXISTS requests_at ON requests (at)")
    with _ready_lock:
        _ready.add(url)


class PgLedger(Ledger):
    def __init__(self, url: str, retention_days: float) -> None:
        super().__init__(Path("postgresql"), retention_days)
        self.url = url

    # --- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        import psycopg

        from . import usagedb

        backlog: list[Record] = []
        conn: Any = None
        wait = RETRY_FIRST
        stopping = False
        down_since: float | None = None
        next_prune = 0.0
        while True:
            stopping = self._gather(backlog, block=not backlog and not stopping) or stopping
            if conn is None:
                try:
                    conn = usagedb.connect(self.url, autocommit=False)
                    ensure_schema(conn, self.url)
                except (usagedb.LedgerError, psycopg.Error) as e:
                    conn = self._drop(conn)
                    if down_since is None:
                        down_since = time.monotonic()
                        log.warning("usage ledger: PostgreSQL at %s cannot be reached, rows wait in memory: %s",
                                    mask_url(self.url), scrub(str(e).strip(), self.url))
                    if stopping:
                        log.warning("usage ledger: %d rows not written (PostgreSQL unreachable at exit)", len(backlog))
                        return
                    time.sleep(wait)
                    wait = min(wait * 2, RETRY_MAX)
                    continue
                if down_since is not None:
                    log.warning("usage ledger: PostgreSQL at %s reachable again; %d waiting rows written",
                                mask_url(self.url), len(backlog))
                    down_since = None
                wait = RETRY_FIRST
            try:
                if time.monotonic() >= next_prune:
                    self._prune_pg(conn)
                    next_prune = time.monotonic() + PRUNE_EVERY
                while backlog:
                    batch = backlog[:BATCH_MAX]
                    self._insert(conn, batch)
                    del backlog[: len(batch)]
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                # The connection broke: the rows stay in the backlog for the next one.
                log.warning("usage ledger: PostgreSQL at %s lost: %s", mask_url(self.url), scrub(str(e).strip(), self.url))
                down_since = time.monotonic()
                conn = self._drop(conn)
                continue
            except psycopg.Error as e:
                log.warning("usage ledger: %d rows not written: %s", len(backlog), scrub(str(e).strip(), self.url))
                backlog.clear()
                conn = self._drop(conn)
            if stopping and not backlog:
                self._drop(conn)
                return

    def _gather(self, backlog: list[Record], *, block: bool) -> bool:
        """Moves queued rows into the backlog (waiting for the first when `block`); True when
        the stop sign came."""
        stop = False
        try:
            first = self._queue.get(timeout=PRUNE_EVERY) if block else self._queue.get_nowait()
        except queue.Empty:
            return False
        items = [first]
        while len(items) < BATCH_MAX:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for item in items:
            if item is self._STOP:
                stop = True
            elif isinstance(item, Record):
                if len(backlog) < QUEUE_MAX:
                    backlog.append(item)
                else:
                    self._dropped += 1
        return stop

    @staticmethod
    def _insert(conn: Any, records: list[Record]) -> None:
        with conn.transaction():
            with conn.cursor() as cursor:
                cursor.executemany(INSERT, [astuple(r) for r in records])

    def _prune_pg(self, conn: Any) -> None:
        with conn.transaction():
            gone = conn.execute("DELETE FROM requests WHERE at < %s", (time.time() - self.retention,)).rowcount
        if gone:
            log.debug("usage ledger: %d rows older than the retention removed", gone)

    @staticmethod
    def _drop(conn: Any) -> None:
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
        return None

