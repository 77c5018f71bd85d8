"""What the CLI and the dashboard's API both do with accounts, so the two never disagree: how an
account is described (`accounts list --json` and `GET /api/accounts` are the same rows), and
every change a user makes (add, import, enable, disable, set, remove) on the same files a
running gateway watches.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from .accounts import KINDS, Account, AccountStore, StoreError, new_id
from .health import POLICIES, ErrorClass
from .paths import Home
from .transport import check_proxy
from .state import ACCOUNT_SCOPE, AccountState, StateFile

READY, COOLING, DISABLED = "ready", "cooling", "disabled"

# Last errors that stay until the user acts: their advice is the account's next step.
NEEDS_THE_USER = frozenset({ErrorClass.CLIENT_OUTDATED, ErrorClass.AUTH, ErrorClass.FORBIDDEN})

# An error class in plain words: what happened to the account.
PLAIN: dict[str, str] = {
    ErrorClass.RATE_LIMIT: "hit a per-minute rate limit",
    ErrorClass.QUOTA_EXHAUSTED: "used up its quota for the model",
    ErrorClass.CAPACITY: "the model was overloaded upstream",
    ErrorClass.AUTH: "its credentials were refused",
    ErrorClass.FORBIDDEN: "is not allowed to use the service",
    ErrorClass.VALIDATION_REQUIRED: "Google asks to verify the account",
    ErrorClass.INVALID_GRANT: "its sign-in expired or was revoked",
    ErrorClass.NOT_FOUND: "the model is not available to it",
    ErrorClass.BAD_REQUEST: "a request was refused as it was sent",
    ErrorClass.SERVER: "the upstream failed",
    ErrorClass.NETWORK: "the upstream could not be reached",
    ErrorClass.TIMEOUT: "the upstream did not answer in time",
    ErrorClass.CLIENT_OUTDATED: "Google finds the client version outdated",
}


class AdminError(Exception):
    """A change that cannot be made. `field` names the input at fault (`api_key`: the CLI shows
    it as --api-key); `kind` is invalid, not_found or conflict."""

    def __init__(self, message: str, field: str | None = None, kind: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


# --- describing ------------------------------------------------------------------------------------


def describe(account: Account, state: AccountState, now: float, threshold: Callable[[str], float]) -> dict[str, Any]:
    """One account as scripts and pages see it; the secret masked."""
    data = account.public()
    cooldowns = {k: cd for k, cd in state.cooldowns.items() if cd.until > now}
    account_cd = cooldowns.get(ACCOUNT_SCOPE)
    data.update(
        name=account.name,
        status=condition(account, state, now),
        project=account.project or state.project,
        cooldown_until=account_cd.until if account_cd else None,
        cooldowns={k: {"until": cd.until, "error_class": cd.error_class, "message": cd.message} for k, cd in cooldowns.items()},
        last_error=state.last_error.model_dump() if state.last_error else None,
        validation_url=state.validation_url,
        # "protected": under [quota] protect_below, so used only when no other account can serve
        quota={
            m: {**q.model_dump(), "protected": q.remaining is not None and q.remaining < threshold(m)}
            for m, q in sorted(state.quota.items())
        },
        quota_fetched_at=state.quota_fetched_at or None,
    )
    if data["last_error"] is not None:
        data["last_error"]["plain"] = PLAIN.get(data["last_error"]["error_class"], data["last_error"]["error_class"])
    data["next_step"] = next_step(data)
    return data


def describe_all(
    accounts: Iterable[Account], state_of: Callable[[str], AccountState], now: float, threshold: Callable[[str], float]
) -> list[dict[str, Any]]:
    return [describe(a, state_of(a.id), now, threshold) for a in accounts]


def condition(account: Account, state: AccountState, now: float) -> str:
    """ready, cooling (the whole account) or disabled; models cooling alone leave it ready."""
    if not account.enabled:
        return DISABLED
    return COOLING if state.cooldown_until(now) is not None else READY


def next_step(row: dict[str, Any]) -> str | None:
    """What the user can do about the account's trouble, in plain words; None when all is well."""
    cooling = row["cooldowns"].get(ACCOUNT_SCOPE)
    if row.get("validation_url") and cooling and cooling["error_class"] == ErrorClass.VALIDATION_REQUIRED:
        return f"open {row['validation_url']} in a browser signed in to this account, then enable it"
    if not row["enabled"]:
        if str(row.get("disabled_reason") or "").startswith(ErrorClass.INVALID_GRANT):
            return POLICIES[ErrorClass.INVALID_GRANT].advice + "; or Sign in with Google on the dashboard"
        return "enable it to use it again"
    err = row["last_error"]
    if err and err["error_class"] in NEEDS_THE_USER:
        return POLICIES[ErrorClass(err["error_class"])].advice
    # The account, else the model that cools longest: what the user would wait for.
    cooling = cooling or max(row["cooldowns"].values(), key=lambda cd: cd["until"], default=None)
    if cooling and cooling["error_class"] in POLICIES:
        return POLICIES[ErrorClass(cooling["error_class"])].advice
    return None


# --- changing -----------------------------------------------------------------------------------------


def add_key(
    home: Home,
    kind: str,
    api_key: str,
    *,
    base_url: str | None = None,
    models: Iterable[str] = (),
    priority: int = 0,
    label: str = "",
    max_concurrent: int | None = None,
    proxy: str | None = None,
) -> Account:
    if kind not in KINDS or kind == "google":
        raise AdminError(f"must be one of {', '.join(k for k in KINDS if k != 'google')} (got {kind!r})", "kind")
    key = _text(api_key, "api_key").strip()
    if not key:
        raise AdminError("must not be empty", "api_key")
    base = _text(base_url or "", "base_url").strip().rstrip("/") or None
    if base and not base.startswith(("http://", "https://")):
        raise AdminError(f"{base_url!r} is not an http(s) URL", "base_url")
    globs = [m.strip() for m in models if _text(m, "models").strip()]
    account = Account(
        id=new_id(), kind=kind, secret=key, base_url=base, models=globs, priority=_int(priority, "priority"),
        label=_text(label, "label").strip(), max_concurrent=_limit(max_concurrent), proxy=_proxy(proxy),
    )
    return _add(home, account)


def add_google(
    home: Home,
    refresh_token: str,
    *,
    email: str | None = None,
    project: str | None = None,
    label: str = "",
    priority: int = 0,
    max_concurrent: int | None = None,
    proxy: str | None = None,
) -> Account:
    token = _text(refresh_token, "refresh_token").strip()
    if not token:
        raise AdminError("must not be empty", "refresh_token")
    account = Account(
        id=new_id(), kind="google", secret=token, email=_optional(email, "email"), project=_optional(project, "project"),
        label=_text(label or "", "label").strip(),
        priority=_int(priority, "priority"), max_concurrent=_limit(max_concurrent), proxy=_proxy(proxy),
    )
    return _add(home, account)


def import_accounts(home: Home, text: str) -> tuple[int, int]:
    """Google accounts from an export or a token list: (added, already present)."""
    entries = import_entries(_text(text, "text"))
    if not entries:
        raise AdminError("no refresh tokens found", "text")
    added = skipped = 0

    def change(accounts: list[Account]) -> None:
        nonlocal added, skipped
        known = {a.secret for a in accounts if a.kind == "google"}
        for token, email in entries:
            if token in known:
                skipped += 1
                continue
            accounts.append(Account(id=new_id(), kind="google", secret=token, email=email))
            known.add(token)
            added += 1

    _store(home).update(change)
    return added, skipped


def import_entries(text: str) -> list[tuple[str, str | None]]:
    """An Antigravity-Manager export (`{"accounts": [{"email", "refresh_token"}]}`, or a bare
    list of those), or one refresh token per line."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(stripped)
        except ValueError as e:
            raise AdminError(f"not valid JSON: {e}", "text") from None
        items = data.get("accounts", []) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise AdminError('expected {"accounts": [...]}', "text")
        entries = []
        for i, item in enumerate(items):
            token = item.get("refresh_token") or item.get("refreshToken") if isinstance(item, dict) else None
            if not isinstance(token, str) or not token.strip():
                raise AdminError(f"accounts[{i}] has no refresh_token", "text")
            email = item.get("email")
            entries.append((token.strip(), email if isinstance(email, str) else None))
        return entries
    return [(line.strip(), None) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def enable(home: Home, account_id: str) -> Account:
    """Back in the pool, its cooldowns and parked reasons cleared: the user vouches for it."""
    account = _modify(home, account_id, enabled=True, disabled_reason=None)
    StateFile(home.state_file).clear(account_id)
    return account


def disable(home: Home, account_id: str) -> Account:
    return _modify(home, account_id, enabled=False, disabled_reason="disabled by the user")


def change(
    home: Home, account_id: str, *, priority: Any = None, max_concurrent: Any = None, label: Any = None, proxy: Any = None
) -> Account:
    """Priority, concurrency limit (0: none), label or outbound proxy ("": the gateway's own
    route again); what is None stays."""
    changes: dict[str, object] = {}
    if priority is not None:
        changes["priority"] = _int(priority, "priority")
    if max_concurrent is not None:
        changes["max_concurrent"] = _limit(max_concurrent)
    if label is not None:
        changes["label"] = _text(label, "label").strip()
    if proxy is not None:
        changes["proxy"] = _proxy(proxy)
    if not changes:
        raise AdminError("nothing to change: give priority, max_concurrent, label or proxy")
    return _modify(home, account_id, **changes)


def remove(home: Home, account_id: str) -> None:
    try:
        _store(home).remove(account_id)
    except StoreError as e:
        raise _not_found(e) from None


# --- plumbing ----------------------------------------------------------------------------------------------


def _store(home: Home) -> AccountStore:
    return AccountStore(home.accounts_file)


def _add(home: Home, account: Account) -> Account:
    try:
        return _store(home).add(account)
    except StoreError as e:
        raise AdminError(str(e), kind="conflict") from None


def _modify(home: Home, account_id: str, **fields: object) -> Account:
    try:
        return _store(home).modify(account_id, **fields)
    except StoreError as e:
        raise _not_found(e) from None


def _not_found(e: StoreError) -> AdminError:
    return AdminError(str(e), kind="not_found" if "no account with id" in str(e) else "invalid")


def _proxy(value: Any) -> str | None:
    """An account's own outbound proxy (a URL, or "direct"); empty: none of its own."""
    text = _text(value or "", "proxy").strip()
    if not text:
        return None
    try:
        return check_proxy(text)
    except ValueError as e:
        raise AdminError(str(e), "proxy") from None


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdminError(f"must be a whole number (got {value!r})", field)
    return value


def _limit(value: Any) -> int | None:
    """A concurrency limit: None or 0 mean none."""
    if value is None:
        return None
    if _int(value, "max_concurrent") < 0:
        raise AdminError("must be 0 (no limit) or more", "max_concurrent")
    return value or None


def _optional(value: Any, field: str) -> str | None:
    return None if value is None or value == "" else _text(value, field).strip() or None


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise AdminError(f"must be text (got {type(value).__name__})", field)
    return value
