"""`switchyard keys add|list|set|remove`: client keys for the people and scripts sharing a gateway.

The key itself is printed once, by `add`; the keys file keeps only its prefix and a salted hash.
`list` shows each key's limits and what it used today (from the usage ledger).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime
from typing import Any

from . import usagedb
from .keys import ClientKey, KeysError, KeyStore, make
from .paths import Home
from .rates import day_start

UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
NEVER = "never"


def parse_expiry(text: str, now: float | None = None) -> float | None:
    """`30d`, `12h`, `2w`, `90m` from now; a local date or time `2026-12-31[T18:00]`; `never`."""
    now = time.time() if now is None else now
    text = text.strip().lower()
    if text == NEVER:
        return None
    if match := re.fullmatch(r"(\d+(?:\.\d+)?)\s*([mhdw])", text):
        return now + float(match[1]) * UNITS[match[2]]
    try:
        return datetime.fromisoformat(text.upper()).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use 30d, 12h, 2w, a date like 2026-12-31, or never") from None


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or more")
    return value


def _limit(text: str) -> int | None:
    """A limit; 0 means none."""
    return _count(text) or None


def _globs(text: str) -> list[str]:
    return [g.strip() for g in text.split(",") if g.strip()]


def cmd_add(args: argparse.Namespace, where: Home) -> int:
    label = args.label.strip()
    if not label:
        raise KeysError("--label must not be empty")
    record, key = make(
        label, models=_globs(args.models or ""), rpm=args.rpm, tpm=args.tpm, daily_tokens=args.daily_tokens,
        expires_at=args.expires,
    )
    KeyStore(where.keys_file).add(record)
    print(f"added client key {record.id} ({label}): {key}")
    print("it is shown only now; `switchyard connect CLIENT --key KEY` sets a client up with it")
    return 0


def cmd_list(args: argparse.Namespace, where: Home) -> int:
    keys = KeyStore(where.keys_file).load()
    now = time.time()
    used = _used_today(where, now)
    rows = [_describe(k, used.get(k.id, (0, 0)), now) for k in keys]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("no client keys: the config's api_key is the only key (add one with `switchyard keys add --label NAME`)")
        return 0
    table = [("ID", "LABEL", "KEY", "MODELS", "RPM", "TPM", "DAILY", "TODAY", "EXPIRES", "STATUS")]
    for r in rows:
        table.append((
            r["id"], r["label"], r["prefix"], ",".join(r["models"]) or "*", _n(r["rpm"]), _n(r["tpm"]),
            _n(r["daily_tokens"]), f"{r['today']['requests']:,} req / {r['today']['tokens']:,} tok",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r["expires_at"])) if r["expires_at"] else NEVER, r["status"],
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    print("\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table))
    return 0


def _describe(key: ClientKey, used: tuple[int, int], now: float) -> dict[str, Any]:
    data = key.public()
    data["status"] = "disabled" if not key.enabled else "expired" if key.expired(now) else "active"
    data["today"] = {"requests": used[0], "tokens": used[1]}
    return data


def _used_today(where: Home, now: float) -> dict[str, tuple[int, int]]:
    """Each key's use today; none when the ledger cannot be read (said on stderr): the keys are
    still listed."""
    try:
        return usagedb.usage_by_key(usagedb.target(where), day_start(now))
    except usagedb.errors() as e:
        print(f"switchyard: today's use of the keys is unknown: {e}", file=sys.stderr)
        return {}


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def cmd_set(args: argparse.Namespace, where: Home) -> int:
    changes: dict[str, object] = {}
    if args.label is not None:
        if not args.label.strip():
            raise KeysError("--label must not be empty")
        changes["label"] = args.label.strip()
    if args.models is not None:
        changes["models"] = _globs(args.models)
    for name in ("rpm", "tpm", "daily_tokens"):
        if (value := getattr(args, name)) is not None:
            changes[name] = value or None
    if args.expires is not None:
        changes["expires_at"] = args.expires
    if args.enabled is not None:
        changes["enabled"] = args.enabled
    if not changes:
        raise KeysError("nothing to change: give --label, --models, --rpm, --tpm, --daily-tokens, --expires, --enable or --disable")
    record = KeyStore(where.keys_file).modify(args.key, **{k: (None if v == NEVER else v) for k, v in changes.items()})
    print(f"updated client key {record.id} ({record.label}): " + ", ".join(f"{k}={_shown(v)}" for k, v in changes.items()))
    return 0


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(value) or "all"
    if isinstance(value, float):
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(value))
    return str(value)


def cmd_remove(args: argparse.Namespace, where: Home) -> int:
    record = KeyStore(where.keys_file).remove(args.key)
    print(f"removed client key {record.id} ({record.label})")
    return 0


def add_command(commands: Any) -> None:
    """Registers `switchyard keys` on the CLI's subcommands."""
    keys = commands.add_parser("keys", help="client keys: who may use the model API, for which models, how much").add_subparsers(
        dest="keys_command", required=True
    )
    limits = (
        ("--rpm", "requests per minute"), ("--tpm", "tokens (in + out) per minute"),
        ("--daily-tokens", "tokens (in + out) per day, from local midnight"),
    )
    p = keys.add_parser("add", help="make a client key (printed once)")
    p.add_argument("--label", required=True, help="who or what uses it; shown in stats and /metrics")
    p.add_argument("--models", help="comma-separated globs of the models it may use (default: all)")
    for flag, text in limits:
        p.add_argument(flag, type=_limit, help=f"at most this many {text} (default: no limit)")
    p.add_argument("--expires", type=parse_expiry, help="30d, 12h, 2w, a date like 2026-12-31, or never (default)")
    p.set_defaults(handler=cmd_add)

    p = keys.add_parser("list", help="show the client keys, their limits and today's use")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_list)

    p = keys.add_parser("set", help="change a client key's label, models, limits or expiry")
    p.add_argument("key", help="its id or label")
    p.add_argument("--label")
    p.add_argument("--models", help="comma-separated globs; \"\" for all models")
    for flag, text in limits:
        p.add_argument(flag, type=_count, help=f"at most this many {text}; 0 for no limit")
    p.add_argument("--expires", type=lambda text: parse_expiry(text) or NEVER, help="30d, 12h, a date, or never")
    p.add_argument("--enable", dest="enabled", action="store_const", const=True)
    p.add_argument("--disable", dest="enabled", action="store_const", const=False)
    p.set_defaults(handler=cmd_set)

    p = keys.add_parser("remove", help="remove a client key (clients using it are refused at once)")
    p.add_argument("key", help="its id or label")
    p.set_defaults(handler=cmd_remove)
