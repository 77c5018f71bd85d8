"""The usage ledger: one SQLite row per caller request, kept across restarts.

The gateway's event loop must never wait on the disk, so `Ledger.add` only appends the row to a
deque and a writer thread of its own inserts and commits what has gathered, every `FLUSH_EVERY`
seconds: waking a thread per row cost the event loop more than the row itself (the GIL passes to
the writer at every request), while a killed gateway still loses only the rows of its last
moment. WAL mode keeps the file whole through a kill and lets
`switchyard stats` read while the gateway writes.
"""

from __future__ import annotations

import logging
import operator
import os
import sqlite3
import threading
import time
from collections import deque
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from .dialects import SQLITE, Dialect
from .files import PRIVATE, keep_private

log = logging.getLogger("switchyard.ledger")

SCHEMA_VERSION = 2
BATCH_MAX = 1000  # rows per transaction at most
QUEUE_MAX = 100_000  # rows waiting at most; past that new rows are dropped, with a warning
FLUSH_EVERY = 0.1  # seconds between two writes of what has gathered
PRUNE_EVERY = 3600.0  # seconds between retention sweeps
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Record:
    """One caller request, as the ledger keeps it."""

    at: float  # epoch seconds when the request arrived
    protocol: str  # the caller's protocol (openai_chat, anthropic, gemini, ...)
    operation: str  # generate | count_tokens | ...
    requested_model: str | None
    model: str | None  # the upstream model that served it
    account_id: str | None
    account: str | None  # the account's display name then (labels change, ids stay)
    status: int | None  # what the caller got
    error_class: str | None  # None when it went well
    attempts: int  # upstream attempts (0: none was made)
    stream: bool
    latency_ms: float | None
    ttfb_ms: float | None  # until the caller's first byte was ready
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # The error classes of the upstream attempts that failed, in order ("timeout,server"), also
    # when a later attempt served: what a request that looks fine went through.
    attempt_errors: str | None = None
    key_id: str | None = None  # the client key that called ("admin": the config's api_key; None: no key)
    key_label: str | None = None  # its label then
    background: str | None = None  # the background rule that sent it to `background_model`
    fallback_from: str | None = None  # the model that could not serve, when a fallback did
    fallback_reason: str | None = None  # why it could not (an error class, or quota_protected)
    images: int = 0  # pictures made (image generation, or an image model's answer)
    flow_id: str | None = None  # mitmproxy's id of the flow, so the dashboard can link to it in mitmweb


COLUMNS = tuple(f.name for f in fields(Record))
# A record's values in column order: every field is a plain value, so this is `astuple` without
# its deep copy (a tenth of the cost, on the writer thread that shares the GIL with the gateway).
values = operator.attrgetter(*COLUMNS)

# The table is made from Record, column by column, for either database (`create_table`): a field's
# type is the column's type, `| None` lets it be empty, and its default (0 for a count or flag
# without one) is what the rows from before a column was added get. The columns after the first
# schema's are added to an older table that lacks them, so a field appended to Record reaches
# every ledger by itself.
FIRST_COLUMNS = COLUMNS[: COLUMNS.index("reasoning_tokens") + 1]
ADDED_COLUMNS = COLUMNS[len(FIRST_COLUMNS):]


def declaration(name: str, dialect: Dialect) -> str:
    """A column's type and constraints, from Record's field of that name."""
    field = _FIELDS[name]
    kinds = [part.strip() for part in str(field.type).split("|")]
    nullable = "None" in kinds
    (kind,) = [k for k in kinds if k != "None"]
    out = dialect.types[kind] + ("" if nullable else " NOT NULL")
    default = field.default
    if default is MISSING and not nullable and kind in ("int", "bool"):
        default = 0  # a count or a flag that cannot be empty starts at none
    if default is not MISSING and default is not None:
        out += f" DEFAULT {dialect.false if kind == 'bool' and not default else repr(default)}"
    return out


def create_table(dialect: Dialect) -> str:
    """The ledger's table and index, in the dialect's words; a no-op where they exist."""
    columns = ",\n".join(f"    {name} {declaration(name, dialect)}" for name in COLUMNS)
    return (
        f"CREATE TABLE IF NOT EXISTS requests (\n    {dialect.id_column},\n{columns}\n);\n"
        "CREATE INDEX IF NOT EXISTS requests_at ON requests (at);"
    )


_FIELDS = {f.name: f for f in fields(Record)}
_DDL = create_table(SQLITE)
_INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


_FLAGS = [i for i, name in enumerate(COLUMNS) if str(_FIELDS[name].type) == "bool"]


def record_of(row: tuple[Any, ...]) -> Record:
    """A record from a row of COLUMNS read back from SQLite, which keeps a flag as 0 or 1."""
    fields_ = list(row)
    for i in _FLAGS:
        fields_[i] = bool(fields_[i])
    return Record(*fields_)


def append(path: Path, records: list[Record]) -> None:
    """Writes records into the SQLite ledger at `path` (made when missing), in one transaction."""
    db = connect(path)
    try:
        with db:
            db.executemany(_INSERT, [values(r) for r in records])
    finally:
        db.close()


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the ledger, created (mode 0600) with its schema when missing."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        # SQLite gives its -wal and -shm files the database file's mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE))
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if part.exists():
            keep_private(part)
    db = sqlite3.connect(path, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL loses nothing to a killed process, only maybe to a power cut.
    db.execute("PRAGMA synchronous=NORMAL")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        db.close()
        raise sqlite3.DatabaseError(f"{path} was written by a newer switchyard (schema {version})")
    if version < SCHEMA_VERSION:
        # One transaction: a kill midway leaves the old schema and version, and the next start
        # does it again, rather than a version that claims tables which are not there.
        db.executescript(f"BEGIN;\n{_DDL}\nPRAGMA user_version={SCHEMA_VERSION};\nCOMMIT;")
    # Columns are looked for whatever the version says: a file another build upgraded to the same
    # version may lack some. Two processes may add one at once: the second finds it there.
    present = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
    for name in ADDED_COLUMNS:
        if name not in present:
            try:
                db.execute(f"ALTER TABLE requests ADD COLUMN {name} {declaration(name, SQLITE)}")
            except sqlite3.OperationalError as e:
                if "duplicate column" not in str(e):
                    raise
    db.commit()
    return db


def usage_by_key(path: Path, since: float) -> dict[str, tuple[int, int]]:
    """Requests and tokens (input + output) of each client key since `since`: `keys list`, and
    the day's tally a restarted gateway starts its daily limits from. Read-only (the gateway's
    writer may be creating or upgrading the file); a ledger older than client keys has none."""
    if not path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return {}
    try:
        rows = db.execute(
            "SELECT key_id, count(*), coalesce(sum(input_tokens + output_tokens), 0) FROM requests "
            "WHERE at >= ? AND key_id IS NOT NULL GROUP BY key_id", (since,),
        )
        return {key_id: (n, int(tokens)) for key_id, n, tokens in rows}
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


class Ledger:
    """Appends records from any thread without blocking it; a thread of its own writes them."""

    def __init__(self, path: Path, retention_days: float) -> None:
        self.path = path
        self.retention = retention_days * DAY
        self._rows: deque[Record] = deque()  # appended by any thread, taken by the writer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dropped = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="switchyard-ledger", daemon=True)
            self._thread.start()

    def add(self, record: Record) -> None:
        if len(self._rows) < QUEUE_MAX:
            self._rows.append(record)
        else:
            self._dropped += 1
            if self._dropped in (1, 1000) or self._dropped % 100_000 == 0:
                log.warning("the usage ledger cannot keep up: %d rows dropped", self._dropped)

    def close(self, timeout: float = 5.0) -> None:
        """Writes what is queued, then stops the writer."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout)

    # --- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            db = connect(self.path)
        except (OSError, sqlite3.Error) as e:
            log.error("usage ledger %s cannot be opened, requests are not recorded: %s", self.path, e)
            self._drain_forever()
            return
        try:
            next_prune = 0.0
            while True:
                if time.monotonic() >= next_prune:
                    self._prune(db)
                    next_prune = time.monotonic() + PRUNE_EVERY
                stop = self._stop.wait(FLUSH_EVERY)
                while rows := self._take(BATCH_MAX):
                    self._write(db, rows)
                if stop:
                    return
        finally:
            db.close()

    def _take(self, most: int) -> list[Record]:
        rows: list[Record] = []
        try:
            while len(rows) < most:
                rows.append(self._rows.popleft())
        except IndexError:
            pass
        return rows

    def _write(self, db: sqlite3.Connection, records: list[Record]) -> None:
        if not records:
            return
        try:
            with db:
                db.executemany(_INSERT, [values(r) for r in records])
        except sqlite3.Error as e:
            log.warning("usage ledger: %d rows not written: %s", len(records), e)

    def _prune(self, db: sqlite3.Connection) -> None:
        try:
            with db:
                gone = db.execute("DELETE FROM requests WHERE at < ?", (time.time() - self.retention,)).rowcount
            if gone:
                log.debug("usage ledger: %d rows older than the retention removed", gone)
        except sqlite3.Error as e:
            log.warning("usage ledger: old rows not removed: %s", e)

    def _drain_forever(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            self._rows.clear()
