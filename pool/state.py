"""What the gateway learns about each account while it runs: cooldowns, quota, tokens, errors.

It is kept in `state.json` beside the accounts file (mode 0600, written atomically) so that a
restart does not forget that an account is cooling until 14:05, or why it was parked. The CLI
reads it for `accounts list` and writes it for `accounts refresh`; each account's record carries
`updated_at`, and a reload keeps, per account, whichever side changed it last.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .files import locked, signature, write_json

ACCOUNT_SCOPE = "*"  # the cooldown key for the whole account; other keys are model names


class Cooldown(BaseModel):
    until: float
    error_class: str
    message: str = ""
    failures: int = 1  # consecutive failures of this scope, for the backoff
    # After `until` one request may probe; the scope is healthy again only when it succeeds.
    probing: bool = Field(default=False, exclude=True)


class Quota(BaseModel):
    remaining: float | None = None  # fraction 0..1
    reset_at: float | None = None  # epoch seconds


class LastError(BaseModel):
    at: float
    error_class: str
    message: str
    status: int | None = None
    model: str | None = None


class AccountState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    access_token: str | None = Field(default=None, repr=False)
    access_expires_at: float = 0.0
    project: str | None = None
    email: str | None = None
    quota: dict[str, Quota] = Field(default_factory=dict)
    quota_fetched_at: float = 0.0
    cooldowns: dict[str, Cooldown] = Field(default_factory=dict)
    last_error: LastError | None = None
    validation_url: str | None = None
    last_used_at: float = 0.0
    updated_at: float = 0.0

    def cooling(self, model: str | None, now: float) -> Cooldown | None:
        """The cooldown that stops a request for `model` now, if any."""
        for key in (ACCOUNT_SCOPE, model):
            if key is not None and (cd := self.cooldowns.get(key)) is not None and cd.until > now:
                return cd
        return None

    def cooldown_until(self, now: float) -> float | None:
        """The latest deadline among the account-wide cooldown (what `list` shows)."""
        cd = self.cooldowns.get(ACCOUNT_SCOPE)
        return cd.until if cd is not None and cd.until > now else None


class Session(BaseModel):
    account_id: str
    expires_at: float


class State(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: int = 1
    accounts: dict[str, AccountState] = Field(default_factory=dict)
    sessions: dict[str, Session] = Field(default_factory=dict)

    def of(self, account_id: str) -> AccountState:
        state = self.accounts.get(account_id)
        if state is None:
            state = self.accounts[account_id] = AccountState()
        return state


class StateFile:
    """Loads, merges and saves `State`; saving is cheap to call often (the gateway debounces)."""

    MAX_SESSIONS = 10_000

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None

    def load(self) -> State:
        self._seen = signature(self.path)
        return self._read()

    def changed(self) -> bool:
        return signature(self.path) != self._seen

    def _read(self) -> State:
        try:
            return State.model_validate(json.loads(self.path.read_bytes()))
        except FileNotFoundError:
            return State()
        except (ValueError, ValidationError):
            # A damaged state file only costs what was learned; the accounts themselves are safe.
            return State()

    def merge_from_disk(self, state: State) -> None:
        """Take, per account, the record on disk when it is newer than ours (the CLI wrote it)."""
        disk = self.load()
        for account_id, theirs in disk.accounts.items():
            ours = state.accounts.get(account_id)
            if ours is None or theirs.updated_at > ours.updated_at:
                state.accounts[account_id] = theirs

    def save(self, state: State, live_ids: set[str] | None = None) -> None:
        now = time.time()
        with locked(self.path):
            disk = self._read()
            for account_id, theirs in disk.accounts.items():
                ours = state.accounts.get(account_id)
                if ours is not None and theirs.updated_at > ours.updated_at:
                    state.accounts[account_id] = theirs
            if live_ids is not None:
                state.accounts = {k: v for k, v in state.accounts.items() if k in live_ids}
            state.sessions = {k: s for k, s in state.sessions.items() if s.expires_at > now}
            if len(state.sessions) > self.MAX_SESSIONS:
                newest = sorted(state.sessions.items(), key=lambda kv: kv[1].expires_at)[-self.MAX_SESSIONS :]
                state.sessions = dict(newest)
            write_json(self.path, _dump(state))
            self._seen = signature(self.path)


def _dump(state: State) -> dict[str, Any]:
    return state.model_dump(mode="json")
