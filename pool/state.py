"""What the gateway learns about each account while it runs: cooldowns, quota, tokens, errors.

It is kept in `state.json` beside the accounts file (mode 0600, written atomically) so that a
restart does not forget that an account is cooling until 14:05, or why it was parked, nor which
account each conversation sticks to. The CLI reads it for `accounts list` and writes it for
`accounts refresh` and `enable`; each account's record carries `updated_at` and `cleared_at`, and
a merge keeps, per account, the record the user cleared last, else the one changed last.
The running gateway owns the sessions.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import files
from .files import Signature, locked, signature, write_atomic

ACCOUNT_SCOPE = "*"  # the cooldown key for the whole account; other keys are model names


class Cooldown(BaseModel):
    until: float
    error_class: str
    message: str = ""
    failures: int = 1  # consecutive failures of this scope, for the backoff
    # After `until` one request may probe; the scope is healthy again only when it succeeds.
    probing: bool = Field(default=False, exclude=True)


class Quota(BaseModel):
    """One model of a Google account's catalogue: its quota, and what fetchAvailableModels says of it."""

    remaining: float | None = None  # fraction 0..1
    reset_at: float | None = None  # epoch seconds
    display_name: str | None = None
    max_tokens: int | None = None  # input limit
    max_output_tokens: int | None = None


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
    onboarded: str | None = None  # the tier the gateway onboarded the account to, if it did
    email: str | None = None
    quota: dict[str, Quota] = Field(default_factory=dict)
    quota_fetched_at: float = 0.0
    forwards: dict[str, str] = Field(default_factory=dict)  # deprecated model id -> its successor (Google)
    listed: list[str] = Field(default_factory=list)  # a key account's upstream model list
    cooldowns: dict[str, Cooldown] = Field(default_factory=dict)
    last_error: LastError | None = None
    validation_url: str | None = None
    last_used_at: float = 0.0
    updated_at: float = 0.0
    cleared_at: float = 0.0  # when the user last cleared it (`accounts enable`): that wins a merge

    def newer_than(self, other: AccountState) -> bool:
        """Which of two versions of one account's record a merge keeps."""
        return (self.cleared_at, self.updated_at) > (other.cleared_at, other.updated_at)

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

    MAX_SESSIONS = 2_000  # live conversations kept; serializing them is on the event loop (~1 ms per 1,000)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: Signature | None = None  # the version on disk that the caller's state includes

    @property
    def seen(self) -> Signature | None:
        return self._seen

    def load(self) -> State:
        state, self._seen = self._read_signed()
        return state

    def changed(self) -> bool:
        return signature(self.path) != self._seen

    def _read(self) -> State:
        return self._read_signed()[0]

    def _read_signed(self) -> tuple[State, Signature | None]:
        found = files.read(self.path)
        if found is None:
            return State(), None
        raw, seen = found
        try:
            return State.model_validate_json(raw), seen
        except (ValueError, ValidationError):
            # A damaged state file only costs what was learned; the accounts themselves are safe.
            return State(), seen

    def merge_from_disk(self, state: State) -> None:
        """Take, per account, the record on disk when it is newer than ours (the CLI wrote it)."""
        _merge(self.load(), state)

    def prepare(self, state: State, live_ids: set[str] | None = None) -> bytes:
        """Prunes `state` (gone accounts, expired or surplus sessions) and serializes it."""
        now = time.time()
        if live_ids is not None:
            state.accounts = {k: v for k, v in state.accounts.items() if k in live_ids}
        sessions = {k: s for k, s in state.sessions.items() if s.expires_at > now}
        if len(sessions) > self.MAX_SESSIONS:
            sessions = dict(sorted(sessions.items(), key=lambda kv: kv[1].expires_at)[-self.MAX_SESSIONS :])
        state.sessions = sessions
        return state.model_dump_json().encode()  # pydantic-core: ~10x json.dumps(model_dump())

    def save(self, state: State, live_ids: set[str] | None = None) -> None:
        """Merge what is on disk and write, under the lock (the CLI, and the gateway at exit)."""
        with locked(self.path):
            _merge(self._read(), state)
            self._write(self.prepare(state, live_ids))

    def clear(self, account_id: str) -> None:
        """The user vouches for the account (`enable`, a new login): its cooldowns and parked
        reasons go, and a running gateway takes this record over its own."""
        with locked(self.path):
            state = self._read()
            record = state.of(account_id)
            record.cooldowns.clear()
            record.validation_url = None
            record.cleared_at = record.updated_at = time.time()
            self._write(self.prepare(state))

    def write_if_unchanged(self, data: bytes, base: Signature | None) -> bool:
        """Writes `data` unless the file is no longer `base`, the version `data` was prepared
        from (`seen` then); then the caller merges first and tries again. Safe to run in a
        worker thread (the gateway does) while the loop merges: a merge moves `seen` on, never
        `base`, so data prepared before a merge never overwrites what the merge read."""
        with locked(self.path):
            if signature(self.path) != base:
                return False
            self._write(data)
            return True

    def _write(self, data: bytes) -> None:
        write_atomic(self.path, data)
        self._seen = signature(self.path)


def _merge(disk: State, state: State) -> None:
    for account_id, theirs in disk.accounts.items():
        ours = state.accounts.get(account_id)
        if ours is None or theirs.newer_than(ours):
            state.accounts[account_id] = theirs
