"""Several Switchyard gateways on one machine sharing one pool through a throw-away redis-server
(the replicas rows of scripts/bench.py): each replica has its own home and port, the accounts are
added once, through the first replica's CLI, and reach the others through Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import tomli_w

TOP = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(TOP / "tests"))

from servers import RedisServer, free_port  # noqa: E402


class Replicas:
    """`count` gateways started with `config` (a dict as config.toml reads; each gets its own
    port and the Redis URL) once `add_accounts` has run against the first home's CLI."""

    def __init__(self, root: Path, count: int, config: dict[str, Any]) -> None:
        self.root, self.count, self.config = root, count, config
        self.redis = RedisServer()
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen] = []

    def start(self, add_accounts: Callable[[Callable[..., None]], None]) -> Replicas:
        self.redis.start()
        homes = []
        for n in range(self.count):
            home = self.root / f"replica-{n}"
            home.mkdir(parents=True)
            port = free_port()
            config = {**self.config, "proxy": {**self.config["proxy"], "port": port},
                      "cluster": {"redis_url": self.redis.url}}
            (home / "config.toml").write_bytes(tomli_w.dumps(config).encode())
            (home / "config.toml").chmod(0o600)  # it holds the admin key
            homes.append(home)
            self.ports.append(port)
        add_accounts(lambda *argv: self._cli(homes[0], *argv))
        for home in homes:
            env = {**os.environ, "SWITCHYARD_HOME": str(home)}
            self.procs.append(subprocess.Popen([str(BIN / "switchyard"), "run", "-q"], env=env,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port, proc in zip(self.ports, self.procs):
            self._wait_shared(port, proc)
        return self

    @property
    def pids(self) -> Sequence[int]:
        return [proc.pid for proc in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.redis.close()

    def _cli(self, home: Path, *argv: str) -> None:
        env = {**os.environ, "SWITCHYARD_HOME": str(home)}
        subprocess.run([str(BIN / "switchyard"), *argv], env=env, check=True, stdout=subprocess.DEVNULL)

    def _wait_shared(self, port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
        """Until the replica is connected to Redis and serves a model (its accounts came through)."""
        headers = {"authorization": f"Bearer {self.config['proxy']['api_key']}"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"replica on port {port} exited with status {proc.returncode}")
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", headers=headers, timeout=1).json()
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=headers, timeout=5).json()
                if health.get("cluster") == "ok" and models.get("data"):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"replica on port {port} did not join the shared pool in {timeout} s")
