"""Where the usage ledger lives — a SQLite file under the data dir (the default), or PostgreSQL
(`[usage] database_url`, one table for every replica) — and reading it.

The readers (`stats.py`, `history.py`, the dashboard) write their SQL once, in what both
databases speak, with `?` placeholders; a `Dialect` supplies the few expressions that differ:
the local hour of a row, a whole-number division, a two-value maximum. Reads run in threads (the
CLI, or `asyncio.to_thread` in the gateway), never on the event loop.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from . import ledger
from .paths import Home
from .urls import mask_url, scrub

Target = Path | str  # a SQLite file, or a postgresql:// URL
CONNECT_TIMEOUT = 5  # seconds to reach PostgreSQL before a read fails
IDLE_KEPT = 4  # open reading connections kept per database (the dashboard reads often)


class LedgerError(Exception):
    """The ledger could not be read; the message names it, credentials masked."""


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    hour: str  # a row's local hour, 'YYYY-MM-DD HH:00'
    whole: str  # {} as a whole number, toward zero
    greatest: str  # the larger of two values


SQLITE = Dialect("sqlite", "strftime('%Y-%m-%d %H:00', at, 'unixepoch', 'localtime')", "CAST({} AS INTEGER)", "max")
POSTGRES = Dialect("postgresql", "to_char(to_timestamp(at), 'YYYY-MM-DD HH24:00')", "CAST(trunc({}) AS BIGINT)", "greatest")


def is_postgres(where: Target) -> bool:
    return isinstance(where, str) and where.startswith(("postgresql://", "postgres://"))


def target(home: Home, config: Any | None = None) -> Target:
    """The ledger of this home: `[usage] database_url` when set, else its SQLite file. Without a
    config at hand, the home's config file says (read, never created)."""
    if config is None:
        config = _peek_config(home)
    url = getattr(getattr(config, "usage", None), "database_url", "") if config is not None else ""
    return url or home.ledger_file


def describe(where: Target) -> str:
    """The ledger as messages name it: the file, or the database URL with its password masked."""
    return mask_url(where) if isinstance(where, str) else str(where)


def exists(where: Target) -> bool:
    """Whether there is anything to read (a SQLite ledger is created by the first write)."""
    return True if is_postgres(where) else Path(where).exists()


def _peek_config(home: Home) -> Any | None:
    from . import config as config_file

    if not home.config_file.exists():
        return None
    return config_file.load(home.config_file)


# --- reading ------------------------------------------------------------------------------------------


class Reader:
    """One connection to the ledger, for a few queries."""

    def __init__(self, conn: Any, dialect: Dialect, url: str | None = None) -> None:
        self.conn = conn
        self.dialect = dialect
        self._url = url

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._execute(sql, args)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, map(_plain, row))) for row in cursor.fetchall()]

    def values(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(map(_plain, row)) for row in self._execute(sql, args).fetchall()]

    def _execute(self, sql: str, args: Sequence[Any]) -> Any:
        if self.dialect is SQLITE:
            return self.conn.execute(sql, tuple(args))
        import psycopg

        try:
            return self.conn.execute(sql.replace("%", "%%").replace("?", "%s"), tuple(args))
        except psycopg.Error as e:
            raise LedgerError(f"usage ledger {mask_url(self._url or '')}: {scrub(str(e).strip(), self._url or '')}") from None


def _plain(value: Any) -> Any:
    """PostgreSQL's numeric (round, avg) as the float SQLite gives."""
    return float(value) if isinstance(value, Decimal) else value


@contextlib.contextmanager
def reading(where: Target) -> Iterator[Reader]:
    """A reader of the ledger: its SQLite file (created with its schema when missing, as the
    writer would), or a connection to PostgreSQL from a small pool."""
    if not is_postgres(where):
        db = ledger.connect(Path(where))
        try:
            yield Reader(db, SQLITE)
        finally:
            db.close()
        return
    url = str(where)
    conn = _Pool.take(url)
    try:
        yield Reader(conn, POSTGRES, url)
    except BaseException:
        conn.close()  # a connection a query broke is not reused
        raise
    else:
        _Pool.give(url, conn)


class _Pool:
    """A few idle reading connections per database: connecting (and SCRAM) costs more than a query."""

    _lock = threading.Lock()
    _idle: dict[str, list[Any]] = {}

    @classmethod
    def take(cls, url: str) -> Any:
        with cls._lock:
            idle = cls._idle.get(url)
            conn = idle.pop() if idle else None
        if conn is not None and not conn.closed:
            return conn
        import psycopg

        from .pgledger import ensure_schema

        conn = connect(url, autocommit=True)
        try:
            ensure_schema(conn, url)  # a reader may come before any writer: an empty table, not an error
        except psycopg.Error as e:
            conn.close()
            raise LedgerError(f"usage ledger {mask_url(url)}: {scrub(str(e).strip(), url)}") from None
        return conn

    @classmethod
    def give(cls, url: str, conn: Any) -> None:
        if conn.closed or conn.info.transaction_status != 0:  # 0: idle, nothing open
            conn.close()
            return
        with cls._lock:
            idle = cls._idle.setdefault(url, [])
            if len(idle) < IDLE_KEPT:
                idle.append(conn)
                return
        conn.close()


def connect(url: str, *, autocommit: bool) -> Any:
    """A PostgreSQL connection whose session speaks this machine's local time (for `hour`)."""
    import psycopg

    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT, application_name="switchyard")
    except psycopg.Error as e:
        raise LedgerError(f"usage ledger {mask_url(url)} cannot be reached: {scrub(str(e).strip(), url)}") from None
    zone = local_zone()
    with contextlib.suppress(psycopg.Error):
        conn.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
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


# --- small reads shared by several callers ------------------------------------------------------------------


def usage_by_key(where: Target, since: float) -> dict[str, tuple[int, int]]:
    """Requests and tokens (input + output) of each client key since `since` (see
    `ledger.usage_by_key`), from whichever database keeps the ledger."""
    if not is_postgres(where):
        return ledger.usage_by_key(Path(where), since)
    with reading(where) as db:
        rows = db.values(
            "SELECT key_id, count(*), coalesce(sum(input_tokens + output_tokens), 0) FROM requests "
            "WHERE at >= ? AND key_id IS NOT NULL GROUP BY key_id", (since,),
        )
    return {key_id: (int(n), int(tokens)) for key_id, n, tokens in rows}


def writer(home: Home, config: Any) -> ledger.Ledger:
    """The ledger's writer for this config: PostgreSQL's when `database_url` is set."""
    url = config.usage.database_url
    if url:
        from .pgledger import PgLedger

        return PgLedger(url, config.usage.retention_days)
    return ledger.Ledger(home.ledger_file, config.usage.retention_days)


def errors() -> tuple[type[BaseException], ...]:
    """What a failed read raises: SQLite's errors, or LedgerError."""
    return (sqlite3.Error, LedgerError)
