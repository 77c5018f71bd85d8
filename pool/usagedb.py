"""Where the usage ledger lives — a SQLite file under the data dir (the default), or PostgreSQL
(`[usage] database_url`, one table for every replica) — and reading it.

The readers (`stats.py`, `history.py`, the dashboard) write their SQL once, in what both
databases speak, with `?` placeholders; a `Dialect` (dialects.py) supplies the few expressions
that differ: the local hour of a row, a whole-number division, a two-value maximum. Reads run in
threads (the CLI, or `asyncio.to_thread` in the gateway), never on the event loop. Only this
module's PostgreSQL paths import psycopg (pgledger.py), so a SQLite gateway never loads it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from . import ledger
from .dialects import POSTGRES, SQLITE, Dialect
from .paths import Home
from .urls import mask_url, scrub

Target = Path | str  # a SQLite file, or a postgresql:// URL
IDLE_KEPT = 4  # open reading connections kept per database (the dashboard reads often)


class LedgerError(Exception):
    """The ledger could not be read; the message names it, credentials masked."""


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

    def __init__(self, conn: Any, dialect: Dialect, url: str | None = None, *, reused: bool = False) -> None:
        self.conn = conn
        self.dialect = dialect
        self._url = url or ""
        self._reused = reused  # an idle connection from the pool: PostgreSQL may have restarted since

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._execute(sql, args)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, map(_plain, row))) for row in cursor.fetchall()]

    def values(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(map(_plain, row)) for row in self._execute(sql, args).fetchall()]

    def _execute(self, sql: str, args: Sequence[Any]) -> Any:
        if self.dialect is SQLITE:
            return self.conn.execute(sql, tuple(args))
        from .pgledger import LOST, psycopg

        sql = sql.replace("%", "%%").replace("?", "%s")
        try:
            try:
                return self.conn.execute(sql, tuple(args))
            except LOST:
                if not self._reused:
                    raise
                self.conn.close()  # it outlived a restart of PostgreSQL: once more on a new one
                self.conn, self._reused = _Pool.open(self._url), False
                return self.conn.execute(sql, tuple(args))
        except psycopg.Error as e:
            raise LedgerError(f"usage ledger {mask_url(self._url)}: {scrub(str(e).strip(), self._url)}") from None


def _plain(value: Any) -> Any:
    """PostgreSQL's numeric as SQLite gives it: a whole sum an int, a rounded average a float."""
    if not isinstance(value, Decimal):
        return value
    return int(value) if value.as_tuple().exponent == 0 else float(value)


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
    conn, reused = _Pool.take(url)
    reader = Reader(conn, POSTGRES, url, reused=reused)
    try:
        yield reader
    except BaseException:
        reader.conn.close()  # a connection a query broke is not reused
        raise
    else:
        _Pool.give(url, reader.conn)


class _Pool:
    """A few idle reading connections per database: connecting (and SCRAM) costs more than a query."""

    _lock = threading.Lock()
    _idle: dict[str, list[Any]] = {}

    @classmethod
    def take(cls, url: str) -> tuple[Any, bool]:
        """A connection, and whether it is an idle one reused."""
        with cls._lock:
            idle = cls._idle.get(url)
            conn = idle.pop() if idle else None
        if conn is not None and not conn.closed:
            return conn, True
        return cls.open(url), False

    @staticmethod
    def open(url: str) -> Any:
        from .pgledger import connect, ensure_schema, psycopg

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

        return PgLedger(url, config.usage.retention_days, unsent=home.data_dir / "usage-unsent.sqlite3")
    return ledger.Ledger(home.ledger_file, config.usage.retention_days)


def errors() -> tuple[type[BaseException], ...]:
    """What a failed read raises: SQLite's errors, or LedgerError."""
    return (sqlite3.Error, LedgerError)
