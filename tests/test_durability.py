"""Files that cannot be lost: accounts.json, state.json, config.toml and the usage ledger.

A real gateway is SIGKILLed again and again, at random moments, under load and while the CLI
writes; afterwards every file parses and no account the CLI reported is missing. Writers at
once (many `accounts add-key` processes, threads editing config.toml, the CLI while the gateway
saves its state) lose no update of each other.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import BIN, Gateway
from pool_rig import MODEL, add_google, home_of, wait_until

from pool import config as cfg
from pool import files, ledger
from pool.accounts import AccountStore
from pool.state import Cooldown, State, StateFile

KILLS = 10  # SIGKILLs of the gateway in the long test (each restart costs ~4 s of mitmdump start-up)


# --- checks ------------------------------------------------------------------------------------


def check_files(root: Path) -> dict[str, Any]:
    """Every file of a home parses strictly (no lenient fallback); what they hold."""
    home = home_of(root)
    accounts = AccountStore(home.accounts_file).load()
    state = State.model_validate_json(home.state_file.read_bytes()) if home.state_file.exists() else State()
    config = cfg.load(home.config_file)
    rows = 0
    if home.ledger_file.exists():
        db = ledger.connect(home.ledger_file)
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            rows = db.execute("SELECT count(*) FROM requests").fetchone()[0]
        finally:
            db.close()
    for path in (home.accounts_file, home.state_file, home.ledger_file):  # (the tests write config.toml first)
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    return {"accounts": {a.id: a for a in accounts}, "state": state, "config": config, "ledger_rows": rows}


def leftovers(root: Path) -> list[Path]:
    """Temporary files left beside the config and data files."""
    return [p for d in (root, root / "data") if d.exists() for p in d.iterdir() if p.name.endswith(".tmp")]


def switchyard(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWITCHYARD_HOME": str(root)}
    return subprocess.run([str(BIN / "switchyard"), *args], env=env, capture_output=True, text=True, timeout=60)


def added_id(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split()[3]  # "added gemini account ID (...)"


class Background:
    """A loop on a thread until stopped; an exception in it fails the test at `stop`."""

    def __init__(self, step: Callable[[int], None]) -> None:
        self._step = step
        self._stop = threading.Event()
        self.rounds = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._step(self.rounds)
                self.rounds += 1
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def __enter__(self) -> "Background":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "a background loop did not stop"
        if self.error is not None:
            raise self.error


def load(gateway: Gateway, served: list[int]) -> Callable[[int], None]:
    """One request per call, whole and streamed, OpenAI and Gemini; a gateway that is down
    (killed, restarting) is expected and skipped."""
    client = httpx.Client(timeout=10, headers=gateway.auth())

    def step(n: int) -> None:
        text = {"role": "user", "content": f"durable {n}"}
        try:
            if n % 3 == 2:
                url = f"{gateway.url}/v1beta/models/{MODEL}:generateContent"
                response = client.post(url, json={"contents": [{"role": "user", "parts": [{"text": f"durable {n}"}]}]})
            else:
                body = {"model": MODEL, "messages": [text], "stream": n % 3 == 1}
                response = client.post(f"{gateway.url}/v1/chat/completions", json=body)
        except httpx.HTTPError:
            time.sleep(0.02)  # down: try again shortly
            return
        if response.status_code == 200:
            served.append(n)

    return step


# --- SIGKILL at any moment -------------------------------------------------------------------------


def test_gateway_killed_repeatedly_under_load_and_cli_writes_loses_no_file_and_no_account(make_gateway, sim):
    gateway = make_gateway(start=False)
    root = gateway.home
    home = home_of(root)
    toggled, _ = add_google(sim, home)
    add_google(sim, home)
    gateway.start()
    rng = random.Random(20261101)
    reported: list[str] = []  # ids the CLI said it added
    last: dict[str, Any] = {}  # what the CLI last did to `toggled` and to config.toml

    def cli_step(n: int) -> None:
        key = f"sk-durable-{uuid.uuid4().hex}"
        sim.add_api_key(key, "gemini")
        match n % 5:
            case 0:
                reported.append(added_id(switchyard(root, "accounts", "add-key", "--kind", "gemini", "--api-key", key, "--base-url", sim.url)))
            case 1:
                result = switchyard(root, "accounts", "set", toggled, "--priority", str(n))
                assert result.returncode == 0, result.stderr
                last["priority"] = n
            case 2 | 3:
                verb = "disable" if n % 5 == 2 else "enable"
                result = switchyard(root, "accounts", verb, toggled)
                assert result.returncode == 0, result.stderr
                last["enabled"] = verb == "enable"
            case 4:
                # A writer killed mid-write costs at most its own change, never the file.
                env = {**os.environ, "SWITCHYARD_HOME": str(root)}
                argv = [str(BIN / "switchyard"), "accounts", "add-key", "--kind", "gemini", "--api-key", key, "--base-url", sim.url]
                proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                time.sleep(rng.uniform(0.2, 0.6))
                proc.kill()
                out, _ = proc.communicate()
                if proc.returncode == 0:
                    reported.append(out.split()[3])
        name = f"durable-{n}"
        cfg.update(home.config_file, lambda doc: doc.__setitem__("model_mapping", {name: MODEL}))
        last["mapping"] = name
        time.sleep(rng.uniform(0.1, 0.4))  # pace: leave the two cores to the gateway's restarts

    served: list[int] = []
    with Background(load(gateway, served)), Background(cli_step) as cli_loop:
        for round_ in range(KILLS):
            before = len(served)
            wait_until(lambda: len(served) > before, timeout=20, step=0.01)
            time.sleep(rng.uniform(0.0, 0.6))  # a random moment under load
            gateway.kill()
            check_files(root)
            if round_ % 4 == 3:  # and a moment of the start-up (loading the files, opening the ledger)
                with open(gateway.log_path, "ab") as log:
                    starting = subprocess.Popen([str(BIN / "switchyard"), "run"], env=gateway.env, stdout=log, stderr=subprocess.STDOUT)
                    time.sleep(rng.uniform(0.5, 3.0))
                    starting.kill()
                    starting.wait()
                check_files(root)
            gateway.start()
        wait_until(lambda: cli_loop.rounds >= 10, timeout=30)
    gateway.stop()

    found = check_files(root)
    missing = set(reported) - set(found["accounts"])
    assert not missing, f"accounts the CLI reported as added are gone: {missing}"
    account = found["accounts"][toggled]
    assert account.enabled == last.get("enabled", True)
    assert account.priority == last.get("priority", 0)
    assert found["config"].model_mapping == {last["mapping"]: MODEL}
    assert stat.S_IMODE(home.config_file.stat().st_mode) == 0o600  # as config.update wrote it
    assert found["ledger_rows"] > 0
    stats = switchyard(root, "stats", "--json", "--since", "all")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["totals"]["requests"] == found["ledger_rows"]
    listed = switchyard(root, "accounts", "list", "--json")
    assert listed.returncode == 0 and {row["id"] for row in json.loads(listed.stdout)} == set(found["accounts"])
    # Writers killed mid-write may have left temporaries; once old, the next write sweeps them.
    old = time.time() - files.STALE_AFTER - 1
    for path in leftovers(root):
        os.utime(path, (old, old))
    AccountStore(home.accounts_file).update(lambda accounts: None)
    StateFile(home.state_file).save(State())
    cfg.update(home.config_file, lambda doc: None)
    assert leftovers(root) == []
    assert "Traceback" not in gateway.log()
    assert len(served) >= KILLS and len(reported) >= 2


# --- writers at once ---------------------------------------------------------------------------------


def test_many_add_key_processes_at_once_lose_no_account(tmp_path):
    count = 12
    env = {**os.environ, "SWITCHYARD_HOME": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [str(BIN / "switchyard"), "accounts", "add-key", "--kind", "openai", "--api-key", f"sk-many-{i}-{uuid.uuid4().hex}",
             "--base-url", "http://127.0.0.1:9/v1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(count)
    ]
    ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        ids.append(out.split()[3])
    found = check_files(tmp_path)
    assert sorted(found["accounts"]) == sorted(ids) and len(set(ids)) == count
    # Every process also read (and the first created) config.toml: all agree on one api_key.
    assert found["config"].proxy.api_key.startswith("sk-")


def test_config_edits_from_many_threads_lose_none(tmp_path):
    path = tmp_path / "config.toml"
    first = cfg.load(path)

    def edit(n: int) -> None:
        for round_ in range(5):
            cfg.update(path, lambda doc: doc.setdefault("model_mapping", {}).__setitem__(f"m{n}-{round_}", MODEL))

    threads = [threading.Thread(target=edit, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    config = cfg.load(path)
    assert sorted(config.model_mapping) == sorted(f"m{n}-{r}" for n in range(8) for r in range(5))
    assert config.proxy.api_key == first.proxy.api_key
    assert leftovers(tmp_path) == []


def test_a_config_edit_that_does_not_validate_leaves_the_file_alone(tmp_path):
    path = tmp_path / "config.toml"
    cfg.load(path)
    before = path.read_bytes()
    with pytest.raises(cfg.ConfigError, match="routing.max_attempts"):
        cfg.update(path, lambda doc: doc["routing"].__setitem__("max_attempts", 0))
    assert path.read_bytes() == before


def test_first_starts_at_once_agree_on_one_api_key(tmp_path):
    path = tmp_path / "config.toml"
    keys: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        keys.append(cfg.load(path).proxy.api_key)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(keys) == 8 and set(keys) == {cfg.load(path).proxy.api_key}


def test_threads_of_one_process_write_one_file_at_once(tmp_path):
    path = tmp_path / "state.json"
    payloads = [json.dumps({"writer": n, "pad": "x" * (n * 997)}).encode() for n in range(8)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(40):
                files.write_atomic(path, data)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert path.read_bytes() in payloads
    assert leftovers(tmp_path) == []


def test_temporaries_of_killed_writers_are_swept_and_live_ones_kept(tmp_path):
    path = tmp_path / "accounts.json"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".accounts.json.{dead.pid}.abc.tmp"
    live = tmp_path / f".accounts.json.{os.getpid()}.def.tmp"
    young = tmp_path / f".accounts.json.{dead.pid}.ghi.tmp"  # perhaps a live writer of another pid namespace
    for p in (stale, live, young):
        p.write_bytes(b"{half")
    old = time.time() - files.STALE_AFTER - 1
    os.utime(stale, (old, old))
    os.utime(live, (old, old))
    files.write_json(path, {"accounts": []})
    assert not stale.exists() and live.exists() and young.exists()


def test_lock_files_are_private(tmp_path):
    path = tmp_path / "data" / "accounts.json"
    with files.locked(path):
        pass
    lock = path.with_name(".accounts.json.lock")
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_state_prepared_before_a_merge_never_overwrites_what_the_merge_read(tmp_path):
    """The gateway prepares a write on its loop and writes it from a thread; if the loop merges
    a CLI change meanwhile, the prepared bytes (which lack it) must not land."""
    path = tmp_path / "state.json"
    gateway = StateFile(path)
    state = gateway.load()
    record = state.of("a")
    record.cooldowns["*"] = Cooldown(until=time.time() + 600, error_class="rate_limit")
    record.updated_at = time.time()
    assert gateway.write_if_unchanged(gateway.prepare(state), gateway.seen)
    base, data = gateway.seen, gateway.prepare(state)  # a write on its way...
    StateFile(path).clear("a")  # ...the user clears the account...
    gateway.merge_from_disk(state)  # ...and the loop takes that in
    assert state.of("a").cooldowns == {}
    assert not gateway.write_if_unchanged(data, base)
    on_disk = StateFile(path).load().accounts["a"]
    assert on_disk.cooldowns == {} and on_disk.cleared_at > 0
    assert gateway.write_if_unchanged(gateway.prepare(state), gateway.seen)  # the next round writes
    assert StateFile(path).load().accounts["a"].cleared_at == on_disk.cleared_at


def test_cli_writing_while_the_gateway_saves_state_loses_neither(make_gateway, sim):
    """A cooling account the user keeps enabling: the gateway records a fresh cooldown each time
    it tries it, the CLI clears it and flips other accounts. On disk no record ever goes back
    in time (a stale write would), and at the end both the gateway's last cooldown and the
    user's last changes are there, also after a SIGKILL."""
    gateway = make_gateway(start=False)
    root = gateway.home
    home = home_of(root)
    cooling, cooling_mail = add_google(sim, home, priority=0)  # tried first whenever it is not cooling
    flipped, _ = add_google(sim, home, priority=1)
    steady, _ = add_google(sim, home, priority=1)
    sim.behave("429", {"account": cooling_mail}, retry_delay="600s")
    gateway.start()
    high: dict[str, tuple[float, float]] = {}  # account -> highest (cleared_at, updated_at) seen on disk
    went_back: list[str] = []

    def watch(_n: int) -> None:
        found = files.read(home.state_file)
        if found is not None:
            for account_id, record in State.model_validate_json(found[0]).accounts.items():
                now = (record.cleared_at, record.updated_at)
                if now < high.get(account_id, (0.0, 0.0)):
                    went_back.append(f"{account_id}: {high[account_id]} -> {now}")
                high[account_id] = max(now, high.get(account_id, now))
        time.sleep(0.01)

    last: dict[str, Any] = {}

    def cli_step(n: int) -> None:
        for args in (("enable", cooling), ("disable" if n % 2 == 0 else "enable", flipped), ("set", steady, "--priority", str(n + 1))):
            result = switchyard(root, "accounts", *args)
            assert result.returncode == 0, result.stderr
        last.update(flipped=n % 2 == 1, priority=n + 1)

    served: list[int] = []
    with Background(watch), Background(load(gateway, served)), Background(cli_step) as cli_loop:
        wait_until(lambda: cli_loop.rounds >= 5, timeout=120)
    # The user's last word on `cooling`, then the gateway's: a request that finds it cool again.
    cleared = time.time()
    assert switchyard(root, "accounts", "enable", cooling).returncode == 0

    def tried_again() -> bool:
        httpx.post(f"{gateway.url}/v1/chat/completions", headers=gateway.auth(), timeout=10,
                   json={"model": MODEL, "messages": [{"role": "user", "content": "again"}]})
        return any(e["account"] == cooling_mail and e["status"] == 429 and e["t"] > cleared for e in sim.log("google"))

    wait_until(tried_again, timeout=20, step=0.1)
    gateway.kill()  # no save at exit: what is on disk is what was written while it ran

    assert went_back == []
    found = check_files(root)
    record = found["state"].accounts[cooling]
    assert record.cleared_at >= cleared  # the CLI's clear
    assert record.cooldowns[MODEL].until > time.time() + 500  # the gateway's cooldown after it
    assert found["accounts"][flipped].enabled == last["flipped"]
    assert found["accounts"][steady].priority == last["priority"]
    assert len(served) > 0
    assert "Traceback" not in gateway.log()
