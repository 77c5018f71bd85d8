"""The usage ledger's rows one by one: newest first and filtered for the dashboard's Requests
page, and as CSV for a download. (`stats.py` sums them up.)"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from . import ledger, usagedb
from .usagedb import Target

ROW_COLUMNS = ("id", *ledger.COLUMNS)
MAX_LIMIT = 500
MAX_CSV_ROWS = 1_000_000


class HistoryError(ValueError):
    """A filter or page that cannot be read; the message names it."""


def _status(value: str) -> tuple[str, list[Any]]:
    """ok, error, an HTTP status, or an error class (rate_limit, client_closed, ...)."""
    if value == "ok":
        return "error_class IS NULL", []
    if value == "error":
        return "error_class IS NOT NULL", []
    if value.isdigit():
        return "status = ?", [int(value)]
    return "error_class = ?", [value]


# filter name -> its SQL condition and arguments, from the value asked for
FILTERS: dict[str, Callable[[str], tuple[str, list[Any]]]] = {
    "status": _status,
    "account": lambda v: ("account_id = ?", [v]),
    "model": lambda v: ("(model = ? OR requested_model = ?)", [v, v]),
    "protocol": lambda v: ("protocol = ?", [v]),
}


def rows(
    path: Target,
    filters: dict[str, str] | None = None,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Rows matching every filter, newest first: those older than row `before` (the next page),
    or those newer than row `after` (what arrived since)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise HistoryError(f"limit must be between 1 and {MAX_LIMIT}")
    where, args = _where(filters or {})
    if before is not None:
        where.append("id < ?")
        args.append(before)
    if after is not None:
        where.append("id > ?")
        args.append(after)
    sql = f"SELECT {', '.join(ROW_COLUMNS)} FROM requests"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    return _query(path, sql, [*args, limit])


def latest_id(path: Target) -> int:
    """The newest row's id (0: none yet): where a live view starts."""
    if not usagedb.exists(path):
        return 0
    with usagedb.reading(path) as db:
        return int(db.values("SELECT coalesce(max(id), 0) FROM requests")[0][0])


def choices(path: Target, since: float) -> dict[str, list[Any]]:
    """What the filters can take, from the rows since `since`: accounts (id and name), models,
    protocols, statuses and error classes."""
    if not usagedb.exists(path):
        return {"accounts": [], "models": [], "protocols": [], "statuses": [], "error_classes": []}
    with usagedb.reading(path) as db:
        def column(sql: str) -> list[Any]:
            return [row[0] for row in db.values(sql, (since,)) if row[0] is not None]

        accounts = [
            {"id": account_id, "name": name or account_id}
            for account_id, name in db.values(
                "SELECT account_id, max(account) FROM requests WHERE at >= ? AND account_id IS NOT NULL "
                "GROUP BY account_id ORDER BY 2", (since,),
            )
        ]
        return {
            "accounts": accounts,
            "models": column("SELECT DISTINCT coalesce(model, requested_model) FROM requests WHERE at >= ? ORDER BY 1"),
            "protocols": column("SELECT DISTINCT protocol FROM requests WHERE at >= ? ORDER BY 1"),
            "statuses": column("SELECT DISTINCT status FROM requests WHERE at >= ? ORDER BY 1"),
            "error_classes": column("SELECT DISTINCT error_class FROM requests WHERE at >= ? ORDER BY 1"),
        }


def to_csv(path: Target, since: float, until: float, filters: dict[str, str] | None = None) -> str:
    """The rows of a time range, oldest first, every column, for a spreadsheet."""
    where, args = _where(filters or {})
    where += ["at >= ?", "at <= ?"]
    sql = f"SELECT {', '.join(ROW_COLUMNS)} FROM requests WHERE {' AND '.join(where)} ORDER BY id LIMIT {MAX_CSV_ROWS}"
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(ROW_COLUMNS)
    for row in _query(path, sql, [*args, since, until]):
        writer.writerow(row[c] for c in ROW_COLUMNS)
    return out.getvalue()


def _where(filters: dict[str, str]) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for name, value in filters.items():
        if name not in FILTERS:
            raise HistoryError(f"unknown filter {name!r}: use {', '.join(FILTERS)}")
        if value == "":
            continue
        condition, values = FILTERS[name](value)
        where.append(condition)
        args.extend(values)
    return where, args


def _query(path: Target, sql: str, args: list[Any]) -> list[dict[str, Any]]:
    if not usagedb.exists(path):
        return []
    with usagedb.reading(path) as db:
        out = db.rows(sql, args)
    for row in out:
        row["stream"] = bool(row["stream"])
    return out
