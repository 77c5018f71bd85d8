"""The usage ledger in PostgreSQL (`[usage] database_url`): one table that every replica writes.

As with SQLite (`ledger.py`), `add` only appends the row and a writer thread of its own inserts
them in batches, so the event loop never waits on the database. When PostgreSQL cannot be
reached the rows wait in memory (the deque and a backlog, each up to `ledger.QUEUE_MAX`) while
the writer retries, and are written when it is back: an outage costs no request, and the log
says so once when it starts and once when it ends, the URL's password masked. Rows still
waiting when the gateway stops are kept in a local SQLite file (`unsent`), which the next start
writes to PostgreSQL before anything else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from . import ledger
from .dialects import POSTGRES
from .ledger import ADDED_COLUMNS, BATCH_MAX, COLUMNS, FLUSH_EVERY, PRUNE_EVERY, QUEUE_MAX, Ledger, Record, create_table, declaration, values
from .urls import mask_url, scrub
from .usagedb import LedgerError

log = logging.getLogger("switchyard.ledger")

CONNECT_TIMEOUT = 5  # seconds to reach PostgreSQL before a try counts as failed
RETRY_FIRST = 0.5  # seconds before the first reconnect; doubling up to RETRY_MAX
RETRY_MAX = 10.0
SCHEMA_LOCK = 0x5357_4C44  # the advisory lock replicas creating or upgrading the table take turns on
INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
LOST = (psycopg.OperationalError, psycopg.InterfaceError)  # the connection, not the rows, is at fault

_ready: set[str] = set()  # databases whose schema this process has seen to
_ready_lock = threading.Lock()


def connect(url: str, *, autocommit: bool) -> psycopg.Connection[Any]:
    """A connection whose session speaks this machine's local time (the readers' `hour`), or
    LedgerError naming the database with its password masked."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT, application_name="switchyard")
    except psycopg.Error as e:
        raise LedgerError(f"usage ledger {mask_url(url)} cannot be reached: {scrub(str(e).strip(), url)}") from None
    with contextlib.suppress(psycopg.Error):
        conn.execute("SELECT set_config('TimeZone', %s, false)", (local_zone(),))
        if not autocommit:
            conn.commit()
    return conn


def local_zone() -> str:
    """This machine's time zone as PostgreSQL takes it: TZ, /etc/localtime's zone name, or the
    current UTC offset (POSIX sign: west is positive)."""
    zone = os.environ.get("TZ", "").lstrip(":")
    if zone and "/" in zone and not zone.startswith("/"):
        return zone
    with contextlib.suppress(OSError):
        link = os.path.realpath("/etc/localtime")
        if "/zoneinfo/" in link:
            return link.split("/zoneinfo/", 1)[1]
    offset = -time.localtime().tm_gmtoff
    return f"UTC{'+' if offset >= 0 else '-'}{abs(offset) // 3600:02d}:{abs(offset) % 3600 // 60:02d}"


def ensure_schema(conn: psycopg.Connection[Any], url: str) -> None:
    """The table (from `ledger.Record`, as SQLite's), its added columns and index, in one
    transaction under an advisory lock (replicas starting together take turns); once per
    database per process."""
    with _ready_lock:
        if url in _ready:
            return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        for statement in create_table(POSTGRES).split(";"):
            if statement.strip():
                conn.execute(statement)
        for name in ADDED_COLUMNS:
            conn.execute(f"ALTER TABLE requests ADD COLUMN IF NOT EXISTS {name} {declaration(name, POSTGRES)}")
    with _ready_lock:
        _ready.add(url)


class PgLedger(Ledger):
    """The SQLite ledger's deque and `add`; a writer thread that inserts into PostgreSQL and
    rides out its outages."""

    def __init__(self, url: str, retention_days: float, unsent: Path | None = None) -> None:
        super().__init__(Path(mask_url(url)), retention_days)  # (only SQLite's writer opens `path`)
        self.url = url
        self.unsent = unsent  # where rows PostgreSQL could not take by the gateway's exit wait for the next start
        self._sent_unsent = False
        self._backlog: list[Record] = []  # taken from the deque, not yet written
        self._down = False  # an outage was logged and its end was not yet

    # --- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        wait = RETRY_FIRST
        stopping = False
        next_prune = 0.0
        while True:
            stopping = self._gather(block=not self._backlog and not stopping) or stopping
            if conn is None:
                # Stopping in an outage: no last wait for a connection that has been failing.
                conn = None if stopping and self._down else self._connect()
                if conn is None:
                    if stopping:
                        self._keep_unsent("is unreachable")
                        return
                    time.sleep(wait)
                    wait = min(wait * 2, RETRY_MAX)
                    continue
                wait = RETRY_FIRST
            try:
                if not self._sent_unsent:
                    self._send_unsent(conn)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY
                    self._prune(conn)
                self._flush(conn)
            except LOST as e:
                self._outage(e)
                conn = _close(conn)
                if stopping:
                    self._keep_unsent("was lost")
                    return
                time.sleep(wait)
                wait = min(wait * 2, RETRY_MAX)
                continue
            if self._down:
                self._down = False
                log.warning("usage ledger: PostgreSQL at %s is back; the rows that waited are written", mask_url(self.url))
            if stopping and not self._backlog:
                _close(conn)
                return

    def _connect(self) -> psycopg.Connection[Any] | None:
        conn = None
        try:
            conn = connect(self.url, autocommit=False)
            ensure_schema(conn, self.url)
            return conn
        except LedgerError as e:
            self._outage(e)
        except psycopg.Error as e:
            self._outage(e)
            _close(conn)
        return None

    def _keep_unsent(self, why: str) -> None:
        """The gateway stops with rows PostgreSQL has not taken: they go to the local file."""
        rows = self._backlog + self._take(QUEUE_MAX)
        self._backlog = []
        if not rows:
            return
        if self.unsent is not None:
            try:
                ledger.append(self.unsent, rows)
                log.warning("usage ledger: PostgreSQL %s at exit; %d rows are kept in %s and written at the next start",
                            why, len(rows), self.unsent)
                return
            except (OSError, sqlite3.Error) as e:
                log.warning("usage ledger: rows cannot be kept in %s: %s", self.unsent, e)
        log.warning("usage ledger: %d rows not written, PostgreSQL %s at exit", len(rows), why)

    def _send_unsent(self, conn: psycopg.Connection[Any]) -> None:
        """Rows an earlier run kept at its exit go to PostgreSQL: they leave the local file only
        once PostgreSQL has committed them (a crash between the two would send them again)."""
        self._sent_unsent = True
        if self.unsent is None or not self.unsent.exists():
            return
        try:
            db = ledger.connect(self.unsent)
        except (OSError, sqlite3.Error) as e:
            log.warning("usage ledger: the rows kept in %s cannot be read: %s", self.unsent, e)
            return
        try:
            rows = db.execute(f"SELECT id, {', '.join(COLUMNS)} FROM requests ORDER BY id").fetchall()
            if not rows:
                return
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(INSERT, [values(ledger.record_of(row[1:])) for row in rows])
            with db:
                db.executemany("DELETE FROM requests WHERE id = ?", [(row[0],) for row in rows])
            log.warning("usage ledger: %d rows kept at an earlier exit are written to PostgreSQL", len(rows))
        except LOST:
            self._sent_unsent = False  # the next connection tries again
            raise
        except (psycopg.Error, sqlite3.Error) as e:
            log.warning("usage ledger: the rows kept in %s are not written: %s", self.unsent, scrub(str(e).strip(), self.url))
        finally:
            db.close()

    def _outage(self, error: Exception) -> None:
        """Says once per outage that the rows wait (every later try fails the same way)."""
        if not self._down:
            self._down = True
            log.warning("usage ledger: PostgreSQL at %s cannot be reached; rows wait in memory and are written when it returns: %s",
                        mask_url(self.url), scrub(str(error).strip(), self.url))

    def _gather(self, *, block: bool) -> bool:
        """Moves gathered rows into the backlog (after the writer's pause when `block`); True
        when the stop sign came."""
        stop = self._stop.wait(FLUSH_EVERY) if block else self._stop.is_set()
        self._backlog.extend(self._take(QUEUE_MAX - len(self._backlog)))  # past that, `add` drops new rows
        return stop

    def _flush(self, conn: psycopg.Connection[Any]) -> None:
        """Writes the backlog, a batch per transaction. A batch PostgreSQL refuses for its rows
        (not the connection) is dropped with a warning, as SQLite's writer does."""
        while self._backlog:
            batch = self._backlog[:BATCH_MAX]
            try:
                with conn.transaction(), conn.cursor() as cursor:
                    cursor.executemany(INSERT, [values(r) for r in batch])
            except LOST:
                raise
            except psycopg.Error as e:
                log.warning("usage ledger: %d rows not written: %s", len(batch), scrub(str(e).strip(), self.url))
            del self._backlog[: len(batch)]

    def _prune(self, conn: psycopg.Connection[Any]) -> None:
        try:
            with conn.transaction():
                gone = conn.execute("DELETE FROM requests WHERE at < %s", (time.time() - self.retention,)).rowcount
        except LOST:
            raise
        except psycopg.Error as e:
            log.warning("usage ledger: old rows not removed: %s", scrub(str(e).strip(), self.url))
            return
        if gone:
            log.debug("usage ledger: %d rows older than the retention removed", gone)


def _close(conn: psycopg.Connection[Any] | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()
    return None
