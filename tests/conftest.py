"""Shared test parts: the simulated upstream, and real gateways (mitmdump + the addon) in front.

Every server binds 127.0.0.1 only; each gateway runs in its own throw-away SWITCHYARD_HOME.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

TOP = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(TOP / "scripts"))

from simupstream import DEFAULT_SETTINGS, SimUpstream  # noqa: E402

SIM_CLIENT = {"client_id": "sim-client-id", "client_secret": "sim-client-secret"}
API_KEY = "sk-test-" + "0" * 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture(scope="session")
def sim() -> Iterator[SimUpstream]:
    upstream = SimUpstream()
    upstream.start()
    yield upstream
    upstream.stop()


class Gateway:
    """A running `switchyard run` (mitmdump) with its own home."""

    def __init__(self, home: Path, sim: SimUpstream, config: dict[str, Any]) -> None:
        self.home = home
        self.sim = sim
        self.config = config
        self.port = config["proxy"]["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = config["proxy"].get("api_key", "")
        self.env = {**os.environ, "SWITCHYARD_HOME": str(home)}
        self.log_path = home / "gateway.log"
        self.proc: subprocess.Popen | None = None

    # --- life ------------------------------------------------------------------------------
    def start(self, *extra: str, web: bool = False, fd_limit: int | None = None) -> "Gateway":
        """Starts it and waits until it answers; `fd_limit` caps its open files (soft and hard)."""
        argv = [str(BIN / "switchyard"), "run", *(["--web"] if web else []), *extra]
        log = open(self.log_path, "ab")

        def limit_files() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

        preexec = limit_files if fd_limit is not None else None
        self.proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1, headers=self.auth()).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not come up:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- helpers ---------------------------------------------------------------------------
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def json_headers(self) -> dict[str, str]:
        """The key and a JSON content type: what every API POST needs (raw bodies included)."""
        return {**self.auth(), "content-type": "application/json"}

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "switchyard"), *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(f"switchyard {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result

    def accounts(self) -> list[dict[str, Any]]:
        return json.loads(self.cli("accounts", "list", "--json").stdout)

    def add_google(self, email: str | None = None, **sim_options: Any) -> str:
        """A Google account known to the simulated upstream and added to the gateway; its id."""
        email = email or f"{uuid.uuid4().hex[:8]}@example.com"
        token = f"sim-refresh-{uuid.uuid4().hex}"
        self.sim.add_google_account(refresh_token=token, email=email, **sim_options)
        out = self.cli("accounts", "add-google", "--refresh-token", token, "--email", email).stdout
        return out.split()[3]

    def add_key(self, kind: str, *extra: str, sim_models: list[str] | None = None) -> str:
        """A key known to the simulated upstream (for `sim_models`, else its kind's defaults)."""
        key = f"sk-{kind}-{uuid.uuid4().hex}"
        self.sim.add_api_key(key, kind, sim_models)
        base = {"openai": f"{self.sim.url}/v1"}.get(kind, self.sim.url)
        out = self.cli("accounts", "add-key", "--kind", kind, "--api-key", key, "--base-url", base, *extra).stdout
        return out.split()[3]

    def openai(self, **options: Any):
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.api_key or "none", max_retries=0, timeout=30, **options)

    def anthropic(self, **options: Any):
        import anthropic

        return anthropic.Anthropic(base_url=self.url, api_key=self.api_key or "none", max_retries=0, timeout=30, **options)

    def genai(self):
        from google import genai

        return genai.Client(api_key=self.api_key or "none", http_options={"base_url": self.url, "timeout": 30_000})


GatewayFactory = Callable[..., Gateway]


def upstream_config(sim: SimUpstream) -> dict[str, Any]:
    """The `[upstreams]` that point every account kind at the simulated upstream."""
    return {
        "antigravity": {"endpoints": [f"{sim.url}/v1internal"], "token_url": f"{sim.url}/token", **SIM_CLIENT},
        "gemini": {"base_url": sim.url},
    }


def prepare_gateway(sim: SimUpstream, home: Path, config: dict[str, Any] | None = None) -> Gateway:
    """A gateway's home with its config.toml written (strict auth, a free port); not started."""
    base = {
        "proxy": {"port": free_port(), "api_key": API_KEY, "auth_mode": "strict", "request_timeout": 20},
        "upstreams": upstream_config(sim),
    }
    full = merge(base, config or {})
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_bytes(tomli_w.dumps(full).encode())
    return Gateway(home, sim, full)


@pytest.fixture
def make_gateway(sim: SimUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFactory]:
    started: list[Gateway] = []

    def make(config: dict[str, Any] | None = None, *, start: bool = True, web: bool = False, extra: tuple[str, ...] = ()) -> Gateway:
        gateway = prepare_gateway(sim, tmp_path_factory.mktemp("home"), config)
        started.append(gateway)
        if start:
            gateway.start(*extra, web=web)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture(autouse=True)
def _clean_sim(request: pytest.FixtureRequest) -> Iterator[None]:
    """Rules set by one test never leak into the next."""
    if "sim" in request.fixturenames or "make_gateway" in request.fixturenames:
        sim: SimUpstream = request.getfixturevalue("sim")
        sim.clear_rules()
        sim.settings(**DEFAULT_SETTINGS)
        yield
        sim.clear_rules()
    else:
        yield
