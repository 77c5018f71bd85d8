"""Client keys: who may call the model API, for which models, how much — one JSON file under the
data dir (`keys.json`, mode 0600), written like `accounts.json`.

A key is shown once, when it is made; the file keeps only its first characters (to tell keys
apart in lists) and a salted SHA-256 of it. A key is 160 random bits, so a fast hash is enough:
a slow one (scrypt, argon2) guards guessable passwords, and would cost every request its time.
The config's `api_key` stays the admin key and is not here.

The gateway notices a changed file by its stat signature, so `switchyard keys add|set|remove`
reaches a running gateway without a restart.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .files import locked, signature, write_json

KEY_PREFIX = "sk-sy-"
SHOWN = len(KEY_PREFIX) + 6  # characters of a key kept and shown: "sk-sy-1a2b3c"


class KeysError(Exception):
    """The keys file or a change to it is not usable; the message says why."""


class ClientKey(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    label: str
    prefix: str  # the key's first SHOWN characters
    salt: str  # hex
    digest: str  # hex sha256(salt + key)
    models: list[str] = Field(default_factory=list)  # globs of the models it may use; empty: all
    rpm: int | None = Field(default=None, ge=1)  # requests per minute
    tpm: int | None = Field(default=None, ge=1)  # tokens (in + out) per minute
    daily_tokens: int | None = Field(default=None, ge=1)  # tokens (in + out) per local calendar day
    expires_at: float | None = None  # epoch seconds; None: never
    enabled: bool = True
    created_at: float = Field(default_factory=time.time)

    def matches(self, presented: str) -> bool:
        digest = hashlib.sha256(bytes.fromhex(self.salt) + presented.encode()).hexdigest()
        return hmac.compare_digest(digest, self.digest)

    def allows(self, model: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(model, glob) for glob in self.models)

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (time.time() if now is None else now)

    def public(self) -> dict[str, object]:
        """What lists show: everything but the salt and digest; the key by its prefix."""
        data = self.model_dump(mode="json", exclude={"salt", "digest"})
        data["prefix"] = self.prefix + "..."
        return data


def new_key() -> str:
    return KEY_PREFIX + secrets.token_hex(20)


def make(label: str, key: str | None = None, **fields: object) -> tuple[ClientKey, str]:
    """A new key record and the key itself (shown to the user once, never stored)."""
    key = key or new_key()
    salt = secrets.token_bytes(16)
    record = ClientKey(
        id=secrets.token_hex(4), label=label, prefix=key[:SHOWN], salt=salt.hex(),
        digest=hashlib.sha256(salt + key.encode()).hexdigest(), **fields,  # type: ignore[arg-type]
    )
    return record, key


class KeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._keys: list[ClientKey] = []
        self._by_prefix: dict[str, list[ClientKey]] = {}

    # --- reading ---------------------------------------------------------------------------
    def load(self) -> list[ClientKey]:
        self._seen = signature(self.path)
        self._set(self._read())
        return list(self._keys)

    def reload_if_changed(self) -> bool:
        """Reads the file again when it changed since the last look (one stat otherwise)."""
        if signature(self.path) == self._seen:
            return False
        self.load()
        return True

    @property
    def keys(self) -> list[ClientKey]:
        return list(self._keys)

    def find(self, presented: str) -> ClientKey | None:
        """The key record for a key a client presented, or None. Only keys with the same first
        characters are hashed, and compared in constant time."""
        for record in self._by_prefix.get(presented[:SHOWN], ()):
            if record.matches(presented):
                return record
        return None

    def get(self, ref: str) -> ClientKey:
        """A key by its id or label."""
        for record in self._keys:
            if ref in (record.id, record.label):
                return record
        raise KeysError(f"no client key with id or label {ref!r}")

    def _set(self, keys: list[ClientKey]) -> None:
        self._keys = keys
        self._by_prefix = {}
        for record in keys:
            self._by_prefix.setdefault(record.prefix, []).append(record)

    def _read(self) -> list[ClientKey]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            return [ClientKey.model_validate(item) for item in json.loads(raw).get("keys", [])]
        except (ValueError, AttributeError, ValidationError) as e:
            raise KeysError(f"{self.path}: not a valid keys file ({type(e).__name__}); fix or remove it") from None

    # --- writing ---------------------------------------------------------------------------
    def update(self, change: Callable[[list[ClientKey]], None]) -> list[ClientKey]:
        """Applies `change` to the freshest list on disk and writes it back, all under the lock."""
        with locked(self.path):
            keys = self._read()
            change(keys)
            write_json(self.path, {"version": 1, "keys": [k.model_dump(mode="json") for k in keys]})
            self._set(keys)
            self._seen = signature(self.path)
        return list(keys)

    def add(self, record: ClientKey) -> ClientKey:
        def change(keys: list[ClientKey]) -> None:
            if any(k.label == record.label for k in keys):
                raise KeysError(f"a client key labelled {record.label!r} exists already")
            keys.append(record)

        self.update(change)
        return record

    def modify(self, ref: str, **fields: object) -> ClientKey:
        found: list[ClientKey] = []

        def change(keys: list[ClientKey]) -> None:
            for i, record in enumerate(keys):
                if ref in (record.id, record.label):
                    label = fields.get("label")
                    if label is not None and any(k.label == label and k is not record for k in keys):
                        raise KeysError(f"a client key labelled {label!r} exists already")
                    keys[i] = ClientKey.model_validate({**record.model_dump(), **fields})
                    found.append(keys[i])
                    return
            raise KeysError(f"no client key with id or label {ref!r}")

        self.update(change)
        return found[0]

    def remove(self, ref: str) -> ClientKey:
        gone: list[ClientKey] = []

        def change(keys: list[ClientKey]) -> None:
            for record in keys:
                if ref in (record.id, record.label):
                    gone.append(record)
                    keys.remove(record)
                    return
            raise KeysError(f"no client key with id or label {ref!r}")

        self.update(change)
        return gone[0]
