"""The accounts a user added: one JSON file under the data dir, mode 0600, written atomically.

The CLI and a running gateway both use this store. Every change is a read-modify-write under a
file lock, and the gateway notices a changed file by its stat signature, so `switchyard accounts
disable X` reaches a running gateway without a restart.
"""

from __future__ import annotations

import fnmatch
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import files
from .files import Signature, locked, signature, write_json
from .transport import check_proxy, mask_proxy

Kind = Literal["google", "gemini", "openai", "anthropic"]
KINDS: tuple[Kind, ...] = ("google", "gemini", "openai", "anthropic")

# What an account serves when the user gave no `--models`: its own family of models.
DEFAULT_MODELS: dict[str, list[str]] = {
    "google": ["gemini-*", "claude-*", "gpt-oss-*"],
    "gemini": ["gemini-*", "gemma-*", "learnlm-*"],
    "openai": ["gpt-*", "o1*", "o3*", "o4*", "chatgpt-*", "codex-*", "dall-e-*", "text-embedding-*"],
    "anthropic": ["claude-*"],
}


class StoreError(Exception):
    """The accounts file or a change to it is not usable; the message says why."""


class Account(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    kind: Kind
    label: str = ""
    email: str | None = None
    enabled: bool = True
    priority: int = 0
    models: list[str] = Field(default_factory=list)
    base_url: str | None = None
    # The refresh token of a Google account, or the API key of a key account.
    secret: str = Field(repr=False)
    project: str | None = None
    disabled_reason: str | None = None
    max_concurrent: int | None = Field(default=None, ge=1)
    # This account's outbound proxy (or "direct"), over `[network] proxy`; None: that one.
    proxy: str | None = None
    created_at: float = Field(default_factory=time.time)

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, url: str | None) -> str | None:
        return check_proxy(url) if url else None

    @property
    def model_globs(self) -> list[str]:
        return self.models or DEFAULT_MODELS[self.kind]

    def serves(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, glob) for glob in self.model_globs)

    @property
    def name(self) -> str:
        """How logs and flows refer to the account: never by its secret."""
        return self.label or self.email or self.id

    def public(self) -> dict[str, object]:
        """Everything but the secret, which is shown masked."""
        data = self.model_dump(mode="json", exclude={"secret"})
        data["secret"] = mask(self.secret)
        data["proxy"] = mask_proxy(self.proxy)
        return data


def mask(secret: str | None) -> str:
    if not secret:
        return ""
    if len(secret) <= 12:
        return "..." + secret[-2:]
    return f"{secret[:4]}...{secret[-4:]}"  # ASCII: it also goes into HTTP headers shown by mitmweb


def new_id() -> str:
    return secrets.token_hex(4)


class AccountStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: Signature | None = None
        self._accounts: list[Account] = []

    # --- reading ---------------------------------------------------------------------------
    def load(self) -> list[Account]:
        self._accounts, self._seen = self._read_signed()
        return list(self._accounts)

    @property
    def accounts(self) -> list[Account]:
        return list(self._accounts)

    def changed(self) -> bool:
        """True when the file differs from what was last loaded (checks only a stat)."""
        return signature(self.path) != self._seen

    def get(self, account_id: str) -> Account:
        for account in self._accounts:
            if account.id == account_id:
                return account
        raise StoreError(f"no account with id {account_id!r}")

    def _read(self) -> list[Account]:
        return self._read_signed()[0]

    def _read_signed(self) -> tuple[list[Account], Signature | None]:
        found = files.read(self.path)
        if found is None:
            return [], None
        raw, seen = found
        return self._parse(raw, str(self.path)), seen

    @staticmethod
    def _parse(raw: bytes, where: str) -> list[Account]:
        try:
            data = json.loads(raw)
            return [Account.model_validate(item) for item in data.get("accounts", [])]
        except (ValueError, AttributeError, TypeError, ValidationError) as e:
            raise StoreError(f"{where}: not a valid accounts file ({type(e).__name__}); fix or remove it") from None

    # --- sharing (replicas: the same list in Redis) ---------------------------------------------
    @property
    def revision(self) -> Signature | None:
        """The version of the file the loaded list is (changes with every write)."""
        return self._seen

    def dump(self) -> bytes:
        """The loaded list as the file holds it (secrets included: it goes only to the shared store)."""
        return json.dumps(_document(self._accounts)).encode()

    def replace(self, raw: bytes) -> None:
        """Takes in a list another replica published, writing it to this host's file."""
        accounts = self._parse(raw, "the shared accounts list")
        if self._read() == accounts:  # already this list: the file (and its signature) stays
            self.load()
            return

        def change(current: list[Account]) -> None:
            current[:] = accounts

        self.update(change)

    # --- writing ---------------------------------------------------------------------------
    def update(self, change: Callable[[list[Account]], None]) -> list[Account]:
        """Applies `change` to the freshest list on disk and writes it back, all under the lock."""
        with locked(self.path):
            accounts = self._read()
            change(accounts)
            write_json(self.path, _document(accounts))
            self._accounts = accounts
            self._seen = signature(self.path)
        return list(accounts)

    def add(self, account: Account) -> Account:
        def change(accounts: list[Account]) -> None:
            for existing in accounts:
                if existing.kind == account.kind and existing.secret == account.secret:
                    raise StoreError(f"this {account.kind} credential is already account {existing.id}")
            accounts.append(account)

        self.update(change)
        return account

    def modify(self, account_id: str, **fields: object) -> Account:
        found: list[Account] = []

        def change(accounts: list[Account]) -> None:
            for i, account in enumerate(accounts):
                if account.id == account_id:
                    accounts[i] = account.model_copy(update=fields)
                    found.append(accounts[i])
                    return
            raise StoreError(f"no account with id {account_id!r}")

        self.update(change)
        return found[0]

    def remove(self, account_id: str) -> None:
        def change(accounts: list[Account]) -> None:
            before = len(accounts)
            accounts[:] = [a for a in accounts if a.id != account_id]
            if len(accounts) == before:
                raise StoreError(f"no account with id {account_id!r}")

        self.update(change)


def _document(accounts: list[Account]) -> dict[str, object]:
    return {"version": 1, "accounts": [a.model_dump(mode="json") for a in accounts]}
