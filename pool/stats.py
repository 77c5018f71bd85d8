"""`switchyard stats`: requests, tokens and errors from the usage ledger, as a table or JSON.

The JSON form is for scripts and stays stable: {"since", "until", "by", "totals", "rows"}, where
every row has the grouping keys and the same counters as "totals" (less the breakdowns).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import usagedb
from .paths import Home
from .usagedb import Reader, Target

_HOUR = "{hour}"  # the dialect's local hour (dialects.Dialect.hour)
# Grouping -> (what SQL groups by, the row keys it adds and their SQL).
GROUPS: dict[str, tuple[str, dict[str, str]]] = {
    "account": ("account_id", {"account_id": "account_id", "account": "max(account)"}),
    # What served the request, or what was asked for when nothing did (unknown models, errors).
    "model": ("coalesce(model, requested_model)", {"model": "coalesce(model, requested_model)"}),
    "hour": (_HOUR, {"hour": _HOUR}),
    # The client key by id (labels change, ids stay); "admin" is the config's api_key.
    "key": ("key_id", {"key_id": "key_id", "key": "max(key_label)"}),
}

COUNTERS: dict[str, str] = {
    "requests": "count(*)",
    "errors": "coalesce(sum(CAST(error_class IS NOT NULL AS INTEGER)), 0)",
    "retried": "coalesce(sum(CAST(attempts > 1 AS INTEGER)), 0)",
    "attempts": "coalesce(sum(attempts), 0)",
    "input_tokens": "coalesce(sum(input_tokens), 0)",
    "output_tokens": "coalesce(sum(output_tokens), 0)",
    "cached_tokens": "coalesce(sum(cached_tokens), 0)",
    "reasoning_tokens": "coalesce(sum(reasoning_tokens), 0)",
    "background": "coalesce(sum(CAST(background IS NOT NULL AS INTEGER)), 0)",  # sent to [routing] background_model
    "fallbacks": "coalesce(sum(CAST(fallback_from IS NOT NULL AS INTEGER)), 0)",  # served by a [fallbacks] model
    "images": "coalesce(sum(images), 0)",
    "avg_latency_ms": "round(CAST(avg(latency_ms) AS NUMERIC), 1)",
    "avg_ttfb_ms": "round(CAST(avg(ttfb_ms) AS NUMERIC), 1)",
}
DEFAULT_BY = ("account", "model")
UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(slots=True)
class Report:
    since: float
    until: float
    by: tuple[str, ...]
    totals: dict[str, Any]
    rows: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "since": _iso(self.since),
            "until": _iso(self.until),
            "by": list(self.by),
            "totals": self.totals,
            "rows": self.rows,
        }


# --- querying ------------------------------------------------------------------------------------


def report(path: Target, since: float, by: Sequence[str] = DEFAULT_BY, until: float | None = None) -> Report:
    """Totals and grouped rows (none when `by` is empty) for the requests that arrived in [since, until]."""
    until = time.time() if until is None else until
    by = tuple(by)
    if not usagedb.exists(path):
        return Report(since, until, by, _empty_totals(), [])
    with usagedb.reading(path) as db:
        return Report(since, until, by, _totals(db, since, until), _rows(db, since, until, by) if by else [])


_WHERE = "FROM requests WHERE at >= ? AND at <= ?"


def _counters_sql() -> str:
    return ", ".join(f"{expr} AS {name}" for name, expr in COUNTERS.items())


def _totals(db: Reader, since: float, until: float) -> dict[str, Any]:
    totals = db.rows(f"SELECT {_counters_sql()} {_WHERE}", (since, until))[0]
    totals["p50_latency_ms"] = _percentile(db, since, until, totals["requests"], 0.50)
    totals["p95_latency_ms"] = _percentile(db, since, until, totals["requests"], 0.95)
    totals["statuses"] = {
        str(status): n
        for status, n in db.values(f"SELECT status, count(*) {_WHERE} GROUP BY status ORDER BY status", (since, until))
    }
    totals["error_classes"] = {
        kind: n
        for kind, n in db.values(
            f"SELECT error_class, count(*) {_WHERE} AND error_class IS NOT NULL GROUP BY error_class ORDER BY 2 DESC, 1",
            (since, until),
        )
    }
    return totals


def _percentile(db: Reader, since: float, until: float, count: int, q: float) -> float | None:
    if not count:
        return None
    found = db.values(
        f"SELECT latency_ms {_WHERE} AND latency_ms IS NOT NULL ORDER BY latency_ms LIMIT 1 OFFSET ?",
        (since, until, max(int(count * q + 0.5) - 1, 0)),
    )
    return round(found[0][0], 1) if found else None


def _rows(db: Reader, since: float, until: float, by: tuple[str, ...]) -> list[dict[str, Any]]:
    keys = ", ".join(f"{expr} AS {name}" for group in by for name, expr in GROUPS[group][1].items())
    group_by = ", ".join(GROUPS[group][0] for group in by)
    # Ties in the order of the groups, NULL first: the same order from either database.
    ties = ", ".join(f"CASE WHEN {GROUPS[group][0]} IS NULL THEN 0 ELSE 1 END, {GROUPS[group][0]}" for group in by)
    order = f"{'hour' if 'hour' in by else 'requests DESC'}, {ties}"
    sql = f"SELECT {keys}, {_counters_sql()} {_WHERE} GROUP BY {group_by} ORDER BY {order}"
    return db.rows(sql.replace(_HOUR, db.dialect.hour), (since, until))


def _empty_totals() -> dict[str, Any]:
    totals: dict[str, Any] = {name: 0 for name in COUNTERS}
    totals.update(avg_latency_ms=None, avg_ttfb_ms=None, p50_latency_ms=None, p95_latency_ms=None)
    return totals | {"statuses": {}, "error_classes": {}}


# --- series over time (the dashboard's charts) --------------------------------------------------------

# range -> (its length, the width of one bar), seconds
RANGES: dict[str, tuple[float, float]] = {"24h": (86400, 3600), "7d": (7 * 86400, 4 * 3600), "30d": (30 * 86400, 86400)}
SERIES_BY: dict[str, tuple[str, str]] = {  # what tokens are stacked by -> (its key, its label), SQL
    "model": ("coalesce(model, requested_model, '(none)')", "max(coalesce(model, requested_model, '(none)'))"),
    "account": ("coalesce(account_id, '(none)')", "coalesce(max(account), max(account_id), '(none)')"),
}
STACKED = 7  # series drawn one by one; the rest are summed as "other"
QUANTILES = {"p50": 0.50, "p95": 0.95}


def series(path: Target, range_name: str, by: str = "model", until: float | None = None) -> dict[str, Any]:
    """Per bar of the range (aligned to the local clock): tokens stacked by model or account,
    requests, errors, and latency and time to first byte (p50, p95)."""
    if range_name not in RANGES:
        raise ValueError(f"range must be one of {', '.join(RANGES)}")
    if by not in SERIES_BY:
        raise ValueError(f"by must be one of {', '.join(SERIES_BY)}")
    until = time.time() if until is None else until
    span, step = RANGES[range_name]
    offset = time.localtime(until).tm_gmtoff
    last = until - (until + offset) % step  # the start of the bar `until` falls in
    count = int(span // step)
    origin = last - (count - 1) * step
    buckets = [origin + i * step for i in range(count)]
    out: dict[str, Any] = {
        "range": range_name, "by": by, "step": step, "buckets": buckets, "labels": {},
        "tokens": {}, "requests": [0] * count, "errors": [0] * count,
        **{f"{what}_{q}": [None] * count for what in ("latency", "ttfb") for q in QUANTILES},
    }
    if not usagedb.exists(path):
        return out
    with usagedb.reading(path) as db:
        _fill(db, out, origin, until, step, by)
    return out


def _fill(db: Reader, out: dict[str, Any], origin: float, until: float, step: float, by: str) -> None:
    whole = db.dialect.whole
    bucket = whole.format(f"(at - {origin!r}) / {step!r}")
    key, label = SERIES_BY[by]
    where = "FROM requests WHERE at >= ? AND at <= ?"
    count = len(out["buckets"])
    per_key: dict[str, list[int]] = {}
    totals: dict[str, int] = {}
    sql = (
        f"SELECT {bucket} AS b, {key} AS k, {label} AS label, count(*), coalesce(sum(CAST(error_class IS NOT NULL AS INTEGER)), 0), "
        f"coalesce(sum(input_tokens + output_tokens), 0) {where} GROUP BY b, k"
    )
    for b, k, shown, requests, errors, tokens in db.values(sql, (origin, until)):
        if not 0 <= b < count:
            continue
        out["requests"][b] += requests
        out["errors"][b] += errors
        per_key.setdefault(k, [0] * count)[b] += tokens
        totals[k] = totals.get(k, 0) + tokens
        out["labels"][k] = shown
    ranked = sorted((k for k in per_key if totals[k] > 0), key=lambda k: -totals[k])
    for k in ranked[:STACKED]:
        out["tokens"][k] = per_key[k]
    if len(ranked) > STACKED:
        rest = [sum(per_key[k][i] for k in ranked[STACKED:]) for i in range(count)]
        out["tokens"]["other"] = rest
        out["labels"]["other"] = "other"
    for what, column in (("latency", "latency_ms"), ("ttfb", "ttfb_ms")):
        ranks = " OR ".join(f"rn = {db.dialect.greatest}({whole.format(f'n * {q} + 0.5')}, 1)" for q in QUANTILES.values())
        sql = (
            f"SELECT b, n, rn, v FROM (SELECT {bucket} AS b, {column} AS v, "
            f"row_number() OVER (PARTITION BY {bucket} ORDER BY {column}) AS rn, "
            f"count(*) OVER (PARTITION BY {bucket}) AS n {where} AND {column} IS NOT NULL) AS ranked WHERE {ranks}"
        )
        for b, n, rn, v in db.values(sql, (origin, until)):
            if not 0 <= b < count:
                continue
            for name, q in QUANTILES.items():
                if rn == max(int(n * q + 0.5), 1):
                    out[f"{what}_{name}"][b] = round(v, 1)


# --- reading the command line ---------------------------------------------------------------------


def parse_since(text: str, now: float | None = None) -> float:
    """`30m`, `24h`, `7d`, `2w` back from now; `all`; or a local date/time `2025-06-01[T10:00]`."""
    now = time.time() if now is None else now
    text = text.strip().lower()
    if text == "all":
        return 0.0
    if match := re.fullmatch(r"(\d+(?:\.\d+)?)\s*([mhdw])", text):
        return now - float(match[1]) * UNITS[match[2]]
    try:
        return datetime.fromisoformat(text.upper()).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use 30m, 24h, 7d, 2w, all or a date like 2025-06-01") from None


def parse_by(text: str) -> tuple[str, ...]:
    groups = tuple(g.strip() for g in text.split(",") if g.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise argparse.ArgumentTypeError(f"--by takes {', '.join(GROUPS)} (or several, comma-separated)")
    return groups


# --- showing ------------------------------------------------------------------------------------------


def render(report: Report) -> str:
    t = report.totals
    span = f"{_clock(report.since) if report.since else 'the beginning'} to {_clock(report.until)}"
    lines = [f"usage from {span}"]
    if not t["requests"]:
        return lines[0] + ": no requests"
    share = f" ({t['errors'] / t['requests'] * 100:.1f}%)" if t["errors"] else ""
    lines += [
        f"  requests {t['requests']:,}   errors {t['errors']:,}{share}   retried {t['retried']:,}   attempts {t['attempts']:,}",
        f"  tokens   in {t['input_tokens']:,}   out {t['output_tokens']:,}   cached {t['cached_tokens']:,}"
        f"   reasoning {t['reasoning_tokens']:,}" + (f"   images {t['images']:,}" if t["images"] else ""),
        f"  latency  avg {_ms(t['avg_latency_ms'])}   p50 {_ms(t['p50_latency_ms'])}   p95 {_ms(t['p95_latency_ms'])}"
        f"   first byte avg {_ms(t['avg_ttfb_ms'])}",
        "  statuses " + "  ".join(f"{status} x{n:,}" for status, n in t["statuses"].items()),
    ]
    if t["background"] or t["fallbacks"]:
        lines.append(f"  rerouted background {t['background']:,}   fallbacks {t['fallbacks']:,}")
    if t["error_classes"]:
        lines.append("  errors   " + ", ".join(f"{kind} {n:,}" for kind, n in t["error_classes"].items()))
    lines += ["", _table(report)]
    return "\n".join(lines)


# Row key -> (column title, how to show it).
_KEY_COLUMNS = {
    "account": ("ACCOUNT", lambda row: row["account"] or row["account_id"] or "(none)"),
    "model": ("MODEL", lambda row: row["model"] or "(none)"),
    "hour": ("HOUR", lambda row: row["hour"]),
    "key": ("KEY", lambda row: row["key"] or row["key_id"] or "(none)"),
}
_COUNT_COLUMNS = [
    ("REQUESTS", "requests"), ("ERRORS", "errors"), ("RETRIED", "retried"), ("IN", "input_tokens"),
    ("OUT", "output_tokens"), ("AVG MS", "avg_latency_ms"), ("TTFB MS", "avg_ttfb_ms"),
]


def _table(report: Report) -> str:
    header = [_KEY_COLUMNS[g][0] for g in report.by] + [title for title, _ in _COUNT_COLUMNS]
    table = [header]
    for row in report.rows:
        cells = [_KEY_COLUMNS[g][1](row) for g in report.by]
        cells += [_number(row[key]) for _, key in _COUNT_COLUMNS]
        table.append(cells)
    keys = len(report.by)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i < keys else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))).rstrip()
        for r in table
    )


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if isinstance(value, float) else f"{value:,}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


# --- the command ---------------------------------------------------------------------------------------


def add_command(commands: Any) -> None:
    """Registers `switchyard stats` on the CLI's subcommands."""
    p = commands.add_parser("stats", help="requests, tokens and errors from the usage ledger")
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.add_argument("--since", type=parse_since, default="24h", help="30m, 24h (default), 7d, 2w, all, or a date")
    p.add_argument("--by", type=parse_by, default=DEFAULT_BY, help="account, model, hour or key (default account,model)")
    p.set_defaults(handler=cmd_stats)


def cmd_stats(args: argparse.Namespace, where: Home) -> int:
    ledger = usagedb.target(where)
    try:
        result = report(ledger, args.since, args.by)
    except usagedb.LedgerError as e:
        print(f"switchyard: {e}", file=sys.stderr)
        return 1
    except usagedb.errors() as e:
        print(f"switchyard: cannot read the usage ledger {usagedb.describe(ledger)}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_json(), indent=2) if args.json else render(result))
    return 0
