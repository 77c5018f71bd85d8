"""What SQLite and PostgreSQL spell differently, for the usage ledger: its table is made from one
definition (`ledger.Record`, see `ledger.create_table`) and its readers write their SQL once; a
`Dialect` supplies the few words that differ."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    id_column: str  # the row id's declaration: an ever-growing integer key
    types: dict[str, str]  # Record's field type -> the column type
    false: str  # a bool column's default
    hour: str  # a row's local hour, 'YYYY-MM-DD HH:00'
    whole: str  # {} as a whole number, toward zero
    greatest: str  # the larger of two values


SQLITE = Dialect(
    name="sqlite",
    id_column="id INTEGER PRIMARY KEY",
    types={"float": "REAL", "int": "INTEGER", "str": "TEXT", "bool": "INTEGER"},
    false="0",
    hour="strftime('%Y-%m-%d %H:00', at, 'unixepoch', 'localtime')",
    whole="CAST({} AS INTEGER)",
    greatest="max",
)
POSTGRES = Dialect(
    name="postgresql",
    id_column="id BIGSERIAL PRIMARY KEY",
    # INTEGER, not BIGINT: a row's counts are small, and sum(integer) is a bigint (an int to
    # Python) where sum(bigint) would be numeric.
    types={"float": "DOUBLE PRECISION", "int": "INTEGER", "str": "TEXT", "bool": "BOOLEAN"},
    false="false",
    # The session's TimeZone is this machine's (usagedb.connect), as SQLite's 'localtime'.
    hour="to_char(to_timestamp(at), 'YYYY-MM-DD HH24:00')",
    whole="CAST(trunc({}) AS BIGINT)",
    greatest="greatest",
)
