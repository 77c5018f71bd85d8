"""The `switchyard` command: run the gateway and manage its accounts."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


from . import admin, check, connect, keycmd, login, stats
from . import config as config_file
from .accounts import KINDS, AccountStore, StoreError
from .config import Config, ConfigError
from .google import GoogleError
from .keys import KeysError
from .health import POLICIES, ErrorClass
from .paths import Home, home
from .pool import Pool
from .transport import Transport, mask_proxy
from .state import ACCOUNT_SCOPE, StateFile

ROUTER = Path(__file__).resolve().parent.parent / "addons" / "router.py"
PROXY_HELP = "this account's outbound proxy: http://, socks5://[user:pass@]HOST:PORT, or direct (default: [network] proxy)"


class CliError(Exception):
    pass


NEEDS_THE_USER = admin.NEEDS_THE_USER


# --- run ---------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, where: Home) -> int:
    config = _config(where)
    config_file.check_startable(config)
    tool = "mitmweb" if args.web else "mitmdump"
    binary = shutil.which(tool, path=str(Path(sys.executable).parent)) or shutil.which(tool)
    if binary is None:
        raise CliError(f"{tool} is not installed in this environment")
    argv = [
        binary,
        "--mode", config_file.reverse_mode(config),
        "--set", "connection_strategy=lazy",
        "-s", str(ROUTER),
        *args.mitmproxy_args,
    ]
    os.execv(binary, argv)
    return 0  # not reached


# --- accounts ----------------------------------------------------------------------------------


def cmd_add_google(args: argparse.Namespace, where: Home) -> int:
    account = admin.add_google(
        where, args.refresh_token, email=args.email, project=args.project, label=args.label or "",
        priority=args.priority, max_concurrent=args.max_concurrent, proxy=args.proxy,
    )
    print(f"added google account {account.id} ({account.name})")
    return 0


def cmd_add_key(args: argparse.Namespace, where: Home) -> int:
    models = (args.models or "").split(",")
    account = admin.add_key(
        where, args.kind, args.api_key, base_url=args.base_url, models=models, priority=args.priority,
        label=args.label or "", max_concurrent=args.max_concurrent, proxy=args.proxy,
    )
    print(f"added {args.kind} account {account.id} ({account.name}, key {account.public()['secret']})")
    return 0


def cmd_import(args: argparse.Namespace, where: Home) -> int:
    try:
        text = Path(args.file).read_text()
    except OSError as e:
        raise CliError(f"cannot read {args.file}: {e.strerror}") from None
    try:
        added, skipped = admin.import_accounts(where, text)
    except admin.AdminError as e:
        raise CliError(f"{args.file}: {e.message}") from None
    print(f"imported {added} google account{'s' if added != 1 else ''}" + (f", {skipped} already present" if skipped else ""))
    return 0


def cmd_list(args: argparse.Namespace, where: Home) -> int:
    accounts = AccountStore(where.accounts_file).load()
    state = StateFile(where.state_file).load()
    now = time.time()
    rows = admin.describe_all(accounts, state.of, now, _config(where).quota.threshold)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("no accounts yet: add one with `switchyard accounts add-google` or `add-key`")
        return 0
    print(_table(rows, now))
    return 0


def _clock(ts: float, now: float) -> str:
    """A moment as a user reads it: the time of day (with the date when not today), and how far."""
    fmt = "%H:%M:%S" if abs(ts - now) < 43200 else "%Y-%m-%d %H:%M"
    return f"{time.strftime(fmt, time.localtime(ts))} ({_span(ts - now)})"


def _span(seconds: float) -> str:
    ahead, s = seconds >= 0, int(abs(seconds))
    if s >= 172800:
        text = f"{s // 86400}d"
    elif s >= 3600:
        text = f"{s // 3600}h{s % 3600 // 60:02d}m"
    else:
        text = f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
    return f"in {text}" if ahead else f"{text} ago"


def _status(row: dict[str, Any], now: float) -> str:
    if not row["enabled"]:
        return "disabled" + (f": {row['disabled_reason']}" if row.get("disabled_reason") else "")
    cooling = row["cooldowns"]
    if ACCOUNT_SCOPE in cooling:
        cd = cooling[ACCOUNT_SCOPE]
        return f"cooling ({cd['error_class']}) until {_clock(cd['until'], now)}"
    if cooling:
        return f"ready; {len(cooling)} model{'s' if len(cooling) != 1 else ''} cooling"
    return "ready"


def _grid(rows: list[tuple[str, ...]], indent: str = "") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]


def _table(rows: list[dict[str, Any]], now: float) -> str:
    """One line per account, then per account its models (quota left, reset, cooldown), its
    last error and what the user can do about a parked account."""
    summary = [("ID", "KIND", "NAME", "PRI", "MAX", "STATUS")]
    for row in rows:
        name = row["label"] or row["email"] or "-"
        limit = str(row["max_concurrent"]) if row.get("max_concurrent") else "-"
        summary.append((row["id"], row["kind"], name, str(row["priority"]), limit, _status(row, now)))
    lines = _grid(summary)
    for row in rows:
        detail = _detail(row, now)
        if detail:
            lines += ["", f"{row['id']}  {row['label'] or row['email'] or row['kind']}", *detail]
    return "\n".join(lines)


def _detail(row: dict[str, Any], now: float) -> list[str]:
    cooling = row["cooldowns"]
    models = sorted(set(row["quota"]) | (set(cooling) - {ACCOUNT_SCOPE}))
    lines = [f"    serves {', '.join(row['models'])}"] if row["models"] else []
    if row.get("proxy"):
        lines.append(f"    through proxy {row['proxy']}")
    if models:
        grid = [("MODEL", "LEFT", "RESETS", "COOLING")]
        for model in models:
            q = row["quota"].get(model) or {}
            left = "-" if q.get("remaining") is None else f"{q['remaining'] * 100:.0f}%" + (" (kept for last)" if q.get("protected") else "")
            reset = _clock(q["reset_at"], now) if q.get("reset_at") and (q.get("remaining") or 0) < 1 else "-"
            cd = cooling.get(model)
            grid.append((model, left, reset, f"{cd['error_class']} until {_clock(cd['until'], now)}" if cd else "-"))
        lines += _grid(grid, "    ")
    if row.get("quota_fetched_at"):
        lines.append(f"    quota fetched {_clock(row['quota_fetched_at'], now)}")
    if err := row["last_error"]:
        where = f" {err['model']}" if err.get("model") and err["model"] != ACCOUNT_SCOPE else ""
        status = f" {err['status']}" if err.get("status") else ""
        lines.append(f"    last error {_clock(err['at'], now)}: {err['error_class']}{status}{where}: {err['message'][:160]}")
    if err and err["error_class"] in NEEDS_THE_USER:
        lines.append(f"    next: {POLICIES[ErrorClass(err['error_class'])].advice}")
    if row.get("validation_url") and cooling.get(ACCOUNT_SCOPE, {}).get("error_class") == "validation_required":
        lines.append(f"    needs verification: open {row['validation_url']}")
        lines.append(f"    then run `switchyard accounts enable {row['id']}`")
    elif not row["enabled"] and str(row.get("disabled_reason") or "").startswith("invalid_grant"):
        lines.append("    sign in again with `switchyard accounts login` (or add a new refresh token)")
    return lines


def cmd_remove(args: argparse.Namespace, where: Home) -> int:
    admin.remove(where, args.id)
    print(f"removed account {args.id}")
    return 0


def cmd_enable(args: argparse.Namespace, where: Home) -> int:
    admin.enable(where, args.id)
    print(f"enabled account {args.id}")
    return 0


def cmd_disable(args: argparse.Namespace, where: Home) -> int:
    admin.disable(where, args.id)
    print(f"disabled account {args.id}")
    return 0


def cmd_set(args: argparse.Namespace, where: Home) -> int:
    if args.priority is None and args.max_concurrent is None and args.label is None and args.proxy is None:
        raise CliError("nothing to change: give --priority, --max-concurrent, --label or --proxy")
    account = admin.change(
        where, args.id, priority=args.priority, max_concurrent=args.max_concurrent, label=args.label, proxy=args.proxy
    )
    shown = {"priority": account.priority, "max_concurrent": account.max_concurrent, "label": account.label,
             "proxy": mask_proxy(account.proxy) if account.proxy else None}
    unset = {"max_concurrent": "no limit", "proxy": "the gateway's ([network] proxy)"}
    changed = [k for k in shown if getattr(args, k) is not None]
    print(f"updated account {args.id}: " + ", ".join(f"{k}={unset.get(k) if shown[k] is None else shown[k]}" for k in changed))
    return 0


def cmd_login(args: argparse.Namespace, where: Home) -> int:
    config = _config(where)
    try:
        found = asyncio.run(
            login.login(config, open_browser=not args.no_browser, stdin=sys.stdin, say=lambda line: print(line, flush=True), timeout=args.timeout)
        )
    except login.LoginError as e:
        raise CliError(str(e)) from None
    account, created = login.save(where, found, args.label)
    print(f"{'added' if created else 'renewed'} google account {account.id} ({found.email}" + (f", project {found.project})" if found.project else ")"))
    return 0


def cmd_refresh(args: argparse.Namespace, where: Home) -> int:
    config = _config(where)
    return asyncio.run(_refresh(config, where, args.id))


async def _refresh(config: Config, where: Home, account_id: str | None) -> int:
    failures = 0
    async with Transport(proxy=config.network.proxy or None) as transport:
        pool = Pool(config, where, transport)
        accounts = [pool.store.get(account_id)] if account_id else pool.accounts
        for account in accounts:
            if account.kind != "google":
                print(f"{account.id}: {account.kind} key accounts have nothing to refresh")
                continue
            try:
                await pool.refresh(account)
            except GoogleError as e:
                failures += 1
                print(f"{account.id} ({account.name}): {e.verdict.error_class}: {e.verdict.message}")
                continue
            state = pool.account_state(account.id)
            print(f"{account.id} ({account.name}): token ok, project {state.project or account.project}, {len(state.quota)} models")
        pool.save()
    return 1 if failures else 0


def cmd_check(args: argparse.Namespace, where: Home) -> int:
    config = _config(where)
    return asyncio.run(_check(config, where, args.id, args.model, args.json))


async def _check(config: Config, where: Home, account_id: str | None, model: str | None, as_json: bool) -> int:
    async with Transport(proxy=config.network.proxy or None) as transport:
        pool = Pool(config, where, transport)
        accounts = [pool.store.get(account_id)] if account_id else pool.accounts
        if not accounts:
            raise CliError("no accounts yet: add one with `switchyard accounts add-google`, `add-key` or `login`")
        checker = check.Checker(pool, model=model)
        reports = []
        for account in accounts:
            reports.append(await checker.check(account))
            if not as_json:
                print(check.render(reports[-1:]).rsplit("\n", 1)[0], flush=True)
        pool.save()
    if as_json:
        print(json.dumps([r.as_json() for r in reports], indent=2, ensure_ascii=False))
    else:
        print(check.render(reports).rsplit("\n", 1)[-1])
    return 0 if all(r.ok for r in reports) else 1


# --- plumbing -----------------------------------------------------------------------------------


def _config(where: Home) -> Config:
    return config_file.load(where.config_file)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="switchyard", description="A local AI gateway built on mitmproxy.")
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="start the gateway (mitmdump, or mitmweb with --web)", epilog="other arguments go to mitmproxy"
    )
    run.add_argument("--web", action="store_true", help="with mitmweb's inspection UI")
    run.set_defaults(handler=cmd_run)

    accounts = commands.add_parser("accounts", help="manage the pool's accounts").add_subparsers(
        dest="accounts_command", required=True
    )
    p = accounts.add_parser("add-google", help="add a Google (Antigravity) account by refresh token")
    p.add_argument("--refresh-token", required=True)
    p.add_argument("--email")
    p.add_argument("--project")
    p.add_argument("--label")
    p.add_argument("--priority", type=int, default=0, help="lower is used first (default 0)")
    p.add_argument("--max-concurrent", type=_positive, help="requests at a time on this account (default: no limit)")
    p.add_argument("--proxy", help=PROXY_HELP)
    p.set_defaults(handler=cmd_add_google)

    p = accounts.add_parser("add-key", help="add an API key account")
    p.add_argument("--kind", required=True, choices=[k for k in KINDS if k != "google"])
    p.add_argument("--api-key", required=True)
    p.add_argument("--base-url")
    p.add_argument("--models", help="comma-separated globs of the models this key serves")
    p.add_argument("--priority", type=int, default=0, help="lower is used first (default 0)")
    p.add_argument("--max-concurrent", type=_positive, help="requests at a time on this account (default: no limit)")
    p.add_argument("--label")
    p.add_argument("--proxy", help=PROXY_HELP)
    p.set_defaults(handler=cmd_add_key)

    p = accounts.add_parser("login", help="add a Google account by signing in with the browser")
    p.add_argument("--no-browser", action="store_true", help="print the URL and read the redirect back (for SSH)")
    p.add_argument("--label")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the sign-in (default 300)")
    p.set_defaults(handler=cmd_login)

    p = accounts.add_parser("set", help="change an account's priority, concurrency limit, label or proxy")
    p.add_argument("id")
    p.add_argument("--priority", type=int)
    p.add_argument("--max-concurrent", type=int, help="requests at a time (0: no limit)")
    p.add_argument("--label")
    p.add_argument("--proxy", help=PROXY_HELP + "; \"\" for the gateway's again")
    p.set_defaults(handler=cmd_set)

    p = accounts.add_parser("import", help="import Google accounts from an export or a token list")
    p.add_argument("file")
    p.set_defaults(handler=cmd_import)

    p = accounts.add_parser("list", help="show accounts, their state and quota")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_list)

    for name, handler, text in (
        ("remove", cmd_remove, "remove an account"),
        ("enable", cmd_enable, "enable an account (and clear its cooldowns)"),
        ("disable", cmd_disable, "disable an account"),
    ):
        p = accounts.add_parser(name, help=text)
        p.add_argument("id")
        p.set_defaults(handler=handler)

    p = accounts.add_parser("refresh", help="refresh tokens, project and quota now")
    p.add_argument("id", nargs="?")
    p.set_defaults(handler=cmd_refresh)

    p = accounts.add_parser(
        "check", help="prove each account can serve: token, project, quota, one tiny generation",
        epilog="exit status 0 only when every checked account can serve",
    )
    p.add_argument("id", nargs="?")
    p.add_argument("--model", help="the model to try (default: one per model family the account lists)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_check)

    stats.add_command(commands)
    keycmd.add_command(commands)
    connect.add_command(commands)
    return top


def _in_cluster(args: argparse.Namespace, where: Home) -> int:
    """With `[cluster] redis_url`, an accounts command changes the list every replica shares."""
    url = _config(where).cluster.effective_redis_url if args.command == "accounts" else ""
    if not url:
        return args.handler(args, where)
    from .redisstore import mirrored_accounts

    with mirrored_accounts(where, url, lambda line: print(f"switchyard: {line}", file=sys.stderr)):
        return args.handler(args, where)


def main(argv: Sequence[str] | None = None) -> None:
    top = parser()
    args, extra = top.parse_known_args(argv)
    if args.command == "run":
        args.mitmproxy_args = extra  # e.g. -q, --set web_port=8090
    elif extra:
        top.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = _in_cluster(args, home())
    except (CliError, ConfigError, StoreError, KeysError, connect.ConnectError) as e:
        print(f"switchyard: {e}", file=sys.stderr)
        code = 1
    except admin.AdminError as e:
        shown = f"--{e.field.replace('_', '-')} {e.message}" if e.field else e.message
        print(f"switchyard: {shown}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
