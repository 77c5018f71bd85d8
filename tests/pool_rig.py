"""Test parts for the pool scenarios: a Pool and Dispatcher driven in this process against the
simulated upstream, and quick account set-up for real gateways.

Accounts are written straight to the accounts file (what `accounts add-google` does) because a
CLI process costs about a second on the test machines; the CLI itself is exercised where a test
is about it (`list --json`, `disable`, `refresh`, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from conftest import merge, upstream_config
from pool import cli
from pool.accounts import Account, AccountStore, new_id
from pool.config import parse
from pool.dispatch import Call, Dispatcher, DispatchError
from pool.paths import Home
from pool.pool import Pool
from pool.transport import Transport

MODEL = "gemini-2.5-flash"


def generations(sim: Any, since: float = 0.0) -> list[tuple[str, int]]:
    """(account email, status) of every generate call the sim saw since `since`, in order."""
    return [
        (e["account"], e["status"])
        for e in sim.log("google")
        if "enerateContent" in e["path"] and e["t"] >= since
    ]


def add_google(sim: Any, home: Home, email: str | None = None, **fields: Any) -> tuple[str, str]:
    """A Google account known to the sim and in the accounts file: (id, email)."""
    email = email or f"{uuid.uuid4().hex[:8]}@example.com"
    token = f"sim-refresh-{uuid.uuid4().hex}"
    sim_options = {k: fields.pop(k) for k in ("access_token_ttl", "models", "project") if k in fields}
    sim.add_google_account(refresh_token=token, email=email, **sim_options)
    account = Account(id=new_id(), kind="google", secret=token, email=email, **fields)
    AccountStore(home.accounts_file).add(account)
    return account.id, email


def home_of(root: Path) -> Home:
    return Home(config_dir=root, data_dir=root / "data")


def listed(home: Home) -> list[dict[str, Any]]:
    """`switchyard accounts list --json`, run in this process."""
    return json.loads(list_output(home, as_json=True))


def list_output(home: Home, *, as_json: bool = False) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli.cmd_list(argparse.Namespace(json=as_json), home)
    return out.getvalue()


@dataclass
class Answer:
    status: int
    account: str | None  # the id of the account that served
    retry_after: float | None = None
    message: str = ""


class Rig:
    """A Pool and a Dispatcher in this process, in front of the sim, with a temporary home."""

    def __init__(self, sim: Any, root: Path, **config: Any) -> None:
        self.sim = sim
        self.home = home_of(root)
        base = {"proxy": {"request_timeout": 20}, "upstreams": upstream_config(sim)}
        self.config = parse(merge(base, config))
        self.transport = Transport(limit=200)
        self._pool: Pool | None = None
        self.dispatcher: Dispatcher | None = None

    def add(self, email: str | None = None, **fields: Any) -> tuple[str, str]:
        return add_google(self.sim, self.home, email, **fields)

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(self.config, self.home, self.transport)
            self.dispatcher = Dispatcher(self._pool)
        return self._pool

    def account(self, account_id: str) -> Account:
        return self.pool.store.get(account_id)

    async def ask(self, *, model: str = MODEL, session: str | None = None, text: str = "hi") -> Answer:
        """One whole request as the gateway makes it: dispatch, read, finish."""
        pool = self.pool
        assert self.dispatcher is not None
        body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        call = Call(model=model, operation="generate", stream=False, encode=lambda _d, _m: body, session=session)
        try:
            exchange = await self.dispatcher.send(call)
        except DispatchError as e:
            return Answer(e.status, None, e.retry_after, e.message)
        try:
            await exchange.response.aread()
        finally:
            await exchange.response.aclose()
        self.dispatcher.finish(exchange, session=session)
        assert pool is self.pool
        return Answer(200, exchange.account.id)

    async def close(self) -> None:
        await self.transport.aclose()


def wait_until(predicate: Any, timeout: float, step: float = 0.05) -> float:
    """Polls `predicate` until it is true; the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start
