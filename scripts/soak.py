"""Switchyard's soak: a long mixed load through a real gateway, and whether it comes back flat.

    .venv/bin/python scripts/soak.py [--requests 20000] [--concurrency 8] [--seed 1]

Starts the simulated upstream and `switchyard run -q` in a throw-away home with several Google
accounts and key accounts, then sends whole and streamed requests in every caller protocol
(OpenAI chat/completions/responses, Anthropic messages, Gemini generateContent and
streamGenerateContent) from a few keep-alive workers, while the upstream misbehaves now and then
(the FAULTS table: 429 bursts, 5xx, stalls, streams dropped mid-way, garbage, errors inside a
200, expired access tokens) and some callers hang up mid-stream. It prints requests done, what
the callers got and the ledger's error classes, and the gateway process's RSS, open descriptors
and asyncio tasks (`switchyard_asyncio_tasks` on /metrics) after warm-up, half-way and at the
end, each taken once the load has stopped and the counts held still. Idle upstream keep-alive
connections are counted apart (the gateway keeps them 15 s); at the end the run waits until
every one that was open when the load stopped has closed, since a leaked one never would. Exit status 0 when RSS grew less than
--max-rss-growth MB and descriptors and tasks came back to their starting counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import tomli_w

TOP = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(TOP / "scripts"))

from demo import SIM_CLIENT, free_port, start_sim, stop_all, wait_healthy  # noqa: E402

MODELS = {"gemini-2.5-flash": 6, "claude-sonnet-4-5": 2, "gpt-4o": 2}  # model -> weight in the mix
SLOW_MODEL = "gemini-3-flash"  # always answered slowly (a rule), for callers that hang up mid-stream
HANG_UP_SHARE = 0.04  # of requests: a stream the caller closes after its first chunk
FAULT_EVERY = 50  # requests between two faults injected upstream (on average)
ACCOUNT_REST = 10.0  # seconds an account is left alone after a fault (to serve again first)
WARM_UP = 150  # requests before the first measurement
SETTLE_TIMEOUT = 60.0  # seconds to wait for the gateway to settle before a measurement
CLIENT_TIMEOUT = 60.0


# --- what the callers send ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """One kind of caller request: its path and body for a model and a prompt."""

    protocol: str
    path: str
    stream: bool
    body: Callable[[str, str], dict[str, Any]]


def _chat(m: str, t: str, stream: bool) -> dict[str, Any]:
    return {"model": m, "messages": [{"role": "user", "content": t}], "stream": stream}


def _gemini(m: str, t: str) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": t}]}]}


def _messages(m: str, t: str, stream: bool) -> dict[str, Any]:
    return {"model": m, "max_tokens": 256, "messages": [{"role": "user", "content": t}], "stream": stream}


SHAPES = [
    Shape("openai_chat", "/v1/chat/completions", False, lambda m, t: _chat(m, t, False)),
    Shape("openai_chat", "/v1/chat/completions", True, lambda m, t: _chat(m, t, True)),
    Shape("openai_completions", "/v1/completions", False, lambda m, t: {"model": m, "prompt": t, "max_tokens": 64}),
    Shape("openai_completions", "/v1/completions", True,
          lambda m, t: {"model": m, "prompt": t, "max_tokens": 64, "stream": True}),
    Shape("openai_responses", "/v1/responses", False, lambda m, t: {"model": m, "input": t}),
    Shape("openai_responses", "/v1/responses", True, lambda m, t: {"model": m, "input": t, "stream": True}),
    Shape("anthropic", "/v1/messages", False, lambda m, t: _messages(m, t, False)),
    Shape("anthropic", "/v1/messages", True, lambda m, t: _messages(m, t, True)),
    Shape("gemini", "/v1beta/models/{model}:generateContent", False, _gemini),
    Shape("gemini", "/v1beta/models/{model}:streamGenerateContent?alt=sse", True, _gemini),
]
# protocol -> (what only a stream that ended well has, what a stream that ended in an error has)
STREAM_ENDS = {
    "openai_chat": (b"data: [DONE]", b'data: {"error"'),
    "openai_completions": (b"data: [DONE]", b'data: {"error"'),
    "openai_responses": (b"event: response.completed", b"event: response.failed"),
    "anthropic": (b"event: message_stop", b"event: error"),
    "gemini": (b'"finishReason"', b'data: {"error"'),
}


# --- what the upstream does wrong -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """A misbehaviour of the simulated upstream, put on one account for `times` requests.
    `action` is a sim `behave` action, or "expire" (the account's access tokens die: the next
    request meets a 401 and the gateway renews the token)."""

    name: str
    action: str
    params: dict[str, Any] = field(default_factory=dict)
    times: int = 1
    kinds: tuple[str, ...] = ("google", "gemini", "openai", "anthropic")  # accounts it may hit
    weight: int = 1


FAULTS = [
    # Each cools the account it hits for a few seconds at most (an upstream hint, or the policy's
    # first step), so the mix stays mostly served rather than mostly "every account is cooling".
    Fault("429 burst", "429", {"retry_after": 1}, times=3, weight=4),
    Fault("quota exhausted", "429", {"reason": "QUOTA_EXHAUSTED", "quota_reset_delay": "3s"}, kinds=("google",)),
    Fault("500", "500", weight=2),
    Fault("503 capacity", "503", {"reason": "MODEL_CAPACITY_EXHAUSTED", "retry_delay": "0.2s"}, times=2),
    Fault("stall", "stall", {"seconds": 1.0}, times=2, weight=2),
    Fault("drop before headers", "drop", {"after_events": 0}),
    Fault("drop mid-stream", "drop", {"after_events": 1}, weight=2),
    Fault("garbage", "garbage", weight=2),
    Fault("error inside a 200", "error200", {"status": 500}, weight=2),
    Fault("slow stream", "slow", {"chunk_delay": 0.05}, times=3),
    Fault("expired token", "expire", kinds=("google",)),
]


# --- the simulated upstream, remote-controlled --------------------------------------------------------


class Sim:
    """The simulated upstream's control API (/_sim/), for a sim in another process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def call(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, f"/_sim/{route}", json=body)
        response.raise_for_status()
        return response.json()

    def behave(self, action: str, match: dict[str, str], times: int | None = None, **params: Any) -> int:
        return self.call("POST", "behave", {"action": action, "match": match, "times": times, **params})["id"]

    def delete_rule(self, rule_id: int) -> None:
        self.call("DELETE", f"behave/{rule_id}")

    def inject(self, fault: Fault, account: str) -> int | None:
        if fault.action == "expire":
            self.call("POST", "expire", {"account": account})
            return None
        return self.behave(fault.action, {"account": account}, fault.times, **fault.params)


# --- the gateway, seen from outside ---------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    label: str
    requests: int
    rss_mb: float
    fds: int  # open descriptors, idle upstream keep-alive connections not counted
    tasks: int
    upstream: int  # connections to the upstream still open (idle in the gateway's pool, or leaked);
    # at the end: of those open when the load stopped
    settled: bool

    def row(self) -> str:
        state = "" if self.settled else "  (not settled)"
        return (f"{self.label:7} after {self.requests:6} requests: RSS {self.rss_mb:7.1f} MB  descriptors {self.fds:4}"
                f" (+{self.upstream} upstream)  asyncio tasks {self.tasks:4}{state}")


class Watch:
    """The gateway process's RSS and descriptors from /proc, its tasks from /metrics."""

    def __init__(self, pid: int, url: str, api_key: str, upstream_port: int) -> None:
        self.pid, self.upstream_port = pid, upstream_port
        # One kept connection: its own descriptor and tasks count the same in every sample.
        self.http = httpx.Client(base_url=url, headers={"authorization": f"Bearer {api_key}"}, timeout=30)

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]

    def sockets(self) -> set[str]:
        found = set()
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(target[8:-1])
        return found

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def upstream(self) -> set[str]:
        """The socket inodes of the process's TCP connections to the upstream's port (idle
        keep-alive ones included)."""
        inodes = self.sockets()
        found = set()
        for table in ("tcp", "tcp6"):
            path = Path(f"/proc/{self.pid}/net/{table}")
            if not path.exists():
                continue
            for line in path.read_text().splitlines()[1:]:
                cols = line.split()
                if int(cols[2].rsplit(":", 1)[1], 16) == self.upstream_port and cols[9] in inodes:
                    found.add(cols[9])
        return found

    def tasks(self) -> int:
        response = self.http.get("/metrics")
        response.raise_for_status()
        match = re.search(r"^switchyard_asyncio_tasks (\S+)$", response.text, re.M)
        if match is None:
            raise RuntimeError("the gateway's /metrics has no switchyard_asyncio_tasks")
        return int(float(match.group(1)))

    def settle(self, label: str, requests: int, *, drain: bool, timeout: float = SETTLE_TIMEOUT) -> Sample:
        """A sample once descriptors and tasks held still for a second. With `drain`, also once
        every upstream connection open when the load stopped has closed: the gateway closes idle
        ones after 15 s, a leaked one never. (Connections opened since are the pool's
        housekeeping — quota and model lists on their own clocks — and are not counted.)"""
        deadline = time.monotonic() + timeout
        load_era = self.upstream()
        seen: list[tuple[int, int, int]] = []
        while True:
            upstream = self.upstream()
            left = len(upstream & load_era) if drain else len(upstream)
            seen.append((self.fds() - len(upstream), self.tasks(), left))
            steady = len(seen) >= 4 and len({(fds, tasks) for fds, tasks, _ in seen[-4:]}) == 1
            settled = steady and (left == 0 or not drain)
            if settled or time.monotonic() > deadline:
                fds, tasks, left = seen[-1]
                return Sample(label, requests, self.rss_mb(), fds, tasks, left, settled)
            time.sleep(0.3)


# --- the load ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # what callers got
    faults: Counter[str] = field(default_factory=Counter)  # what the upstream was told to do
    examples: dict[str, str] = field(default_factory=dict)  # outcome -> one answer that had it


class Load:
    def __init__(self, url: str, api_key: str, sim: Sim, accounts: dict[str, list[str]], seed: int) -> None:
        self.url, self.api_key, self.sim = url, api_key, sim
        self.accounts = accounts  # kind -> what the sim knows each account by (email or key)
        self.rng = random.Random(seed)
        self.tally = Tally()
        self.rules: list[int] = []
        self.faulted: dict[str, float] = {}  # account -> when it was last given a fault
        self.faulty = True

    def pick(self) -> tuple[Shape, str, bool]:
        """A request: its shape, model, and whether the caller hangs up after the first chunk."""
        rng = self.rng
        if rng.random() < HANG_UP_SHARE:
            return rng.choice([s for s in SHAPES if s.stream]), SLOW_MODEL, True
        model = rng.choices(list(MODELS), weights=list(MODELS.values()))[0]
        return rng.choice(SHAPES), model, False

    def maybe_fault(self) -> None:
        if not self.faulty or self.rng.random() >= 1 / FAULT_EVERY:
            return
        fault = self.rng.choices(FAULTS, weights=[f.weight for f in FAULTS])[0]
        # An account still holding an unspent fault, or faulted moments ago, is left alone: a
        # cooling account is not tried, so faults would meet it back to back when it comes back,
        # each doubling its cooldown (the gateway's backoff for an account that keeps failing),
        # until every account of a model cooled for minutes and the load was mostly 429s.
        now = time.monotonic()
        pending = {r["match"].get("account") for r in self.sim.call("GET", "behave") if r["times"]}
        targets = [a for kind in fault.kinds for a in self.accounts.get(kind, [])
                   if a not in pending and now - self.faulted.get(a, -ACCOUNT_REST) >= ACCOUNT_REST]
        if not targets:
            self.tally.faults["(skipped: no account free)"] += 1
            return
        target = self.rng.choice(targets)
        rule = self.sim.inject(fault, target)
        if rule is not None:
            self.rules.append(rule)
        self.faulted[target] = now
        self.tally.faults[fault.name] += 1

    def clear_faults(self) -> None:
        for rule in self.rules:
            self.sim.delete_rule(rule)
        self.rules.clear()

    async def run(self, count: int, concurrency: int) -> None:
        """Sends `count` requests from `concurrency` workers, each on its own keep-alive connection."""
        left = count

        async def worker() -> None:
            nonlocal left
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=CLIENT_TIMEOUT,
                                         headers={"authorization": f"Bearer {self.api_key}"}) as client:
                while left > 0:
                    left -= 1
                    self.maybe_fault()
                    shape, model, hang_up = self.pick()
                    outcome, text = await self.one(client, shape, model, hang_up)
                    self.tally.sent += 1
                    self.tally.outcomes[outcome] += 1
                    self.tally.examples.setdefault(outcome, text[:300])

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def one(self, client: httpx.AsyncClient, shape: Shape, model: str, hang_up: bool) -> tuple[str, str]:
        """Sends one request; what the caller got (ok, hung_up, http_<status>, stream_error,
        stream_cut, wrong_answer, or the client's exception) and the answer's start."""
        prompt = f"soak {uuid.uuid4().hex[:12]}"
        body = shape.body(model, prompt)
        path = shape.path.format(model=model)
        try:
            async with client.stream("POST", path, json=body) as response:
                if hang_up and response.status_code == 200:
                    async for _ in response.aiter_raw():
                        break
                    return "hung_up", ""  # leaving the block closes the connection mid-stream
                raw = await response.aread()
        except httpx.HTTPError as e:
            return f"client_{type(e).__name__}", str(e)
        text = raw.decode(errors="replace")
        if response.status_code != 200:
            return f"http_{response.status_code}", text
        if not shape.stream:
            return ("ok" if f"echo: {prompt}" in text else "wrong_answer"), text
        done, failed = STREAM_ENDS[shape.protocol]
        if failed in raw:
            return "stream_error", text
        return ("ok" if done in raw else "stream_cut"), text


# --- one run ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    samples: list[Sample]
    tally: Tally
    ledger: Counter[tuple[str | None, int | None, bool]]  # (error class, status, an upstream was tried) -> rows
    ledger_rows: int
    seconds: float

    @property
    def rss_growth(self) -> float:
        return self.samples[-1].rss_mb - self.samples[0].rss_mb

    def flat(self, max_rss_growth: float) -> bool:
        first, last = self.samples[0], self.samples[-1]
        return (self.rss_growth < max_rss_growth and last.fds <= first.fds and last.tasks <= first.tasks
                and last.upstream == 0 and all(s.settled for s in self.samples))

    def text(self) -> str:
        t = self.tally
        lines = [f"{t.sent} requests in {self.seconds:.0f} s ({t.sent / self.seconds:.0f} req/s) after {WARM_UP} to warm up"]
        lines += ["callers got: " + ", ".join(f"{k} {v}" for k, v in t.outcomes.most_common())]
        lines += ["faults injected: " + ", ".join(f"{k} {v}" for k, v in t.faults.most_common())]
        lines += [f"ledger: {self.ledger_rows} rows; by error class, status (and whether an upstream was tried):"]
        for (error_class, status, tried), n in sorted(self.ledger.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {error_class or 'ok':22} {status!s:>4}  {'' if tried else 'no upstream tried':17}  {n}")
        lines += [s.row() for s in self.samples]
        lines.append(f"RSS growth {self.rss_growth:+.1f} MB, descriptors {self.samples[-1].fds - self.samples[0].fds:+d}, "
                     f"asyncio tasks {self.samples[-1].tasks - self.samples[0].tasks:+d} (start to end)")
        return "\n".join(lines)


def read_ledger(path: Path, since: float, expect: int, timeout: float = 10.0) -> tuple[Counter[tuple[str | None, int | None, bool]], int]:
    """The ledger's rows since `since` by (error class, status, whether an upstream was tried);
    waits (bounded) for `expect` of them, as its writer thread commits a moment after each request."""
    deadline = time.monotonic() + timeout
    while True:
        db = sqlite3.connect(path, timeout=10)
        try:
            rows = db.execute("SELECT error_class, status, attempts > 0, count(*) FROM requests WHERE at >= ?"
                              " GROUP BY 1, 2, 3", (since,)).fetchall()
        finally:
            db.close()
        counts = Counter({(e, s, bool(tried)): n for e, s, tried, n in rows})
        total = sum(counts.values())
        if total >= expect or time.monotonic() > deadline:
            return counts, total
        time.sleep(0.1)


@contextmanager
def gateway(concurrency: int) -> Iterator[tuple[subprocess.Popen, str, str, Sim, dict[str, list[str]], Path]]:
    """The sim and a gateway with 4 Google accounts (one to onboard) and 6 key accounts."""
    with tempfile.TemporaryDirectory(prefix="switchyard-soak-") as tmp:
        home = Path(tmp)
        procs: list[subprocess.Popen] = []
        try:
            sim_proc, sim_url = start_sim(home / "sim.log")
            procs.append(sim_proc)
            sim = Sim(sim_url)
            port, api_key = free_port(), "sk-soak-" + os.urandom(12).hex()
            (home / "config.toml").write_bytes(tomli_w.dumps({
                "proxy": {"port": port, "api_key": api_key, "auth_mode": "all_except_health", "request_timeout": 30},
                "upstreams": {
                    "antigravity": {"endpoints": [f"{sim_url}/v1internal"], "token_url": f"{sim_url}/token",
                                    "client_id": SIM_CLIENT[0], "client_secret": SIM_CLIENT[1]},
                    "gemini": {"base_url": sim_url},
                },
            }).encode())
            env = {**os.environ, "SWITCHYARD_HOME": str(home)}

            def cli(*args: str) -> None:
                subprocess.run([str(BIN / "switchyard"), "accounts", *args], env=env, check=True,
                               stdout=subprocess.DEVNULL)

            accounts: dict[str, list[str]] = {"google": []}
            export = []
            for n in range(4):
                email, token = f"soak{n}@example.com", f"sim-soak-refresh-{n}-{uuid.uuid4().hex}"
                sim.call("POST", "google-accounts", {"refresh_token": token, "email": email, "onboarded": n != 3})
                export.append({"email": email, "refresh_token": token})
                accounts["google"].append(email)
            (home / "export.json").write_text(json.dumps({"accounts": export}))
            cli("import", str(home / "export.json"))
            bases = {"gemini": sim_url, "openai": f"{sim_url}/v1", "anthropic": sim_url}
            for kind, priority in (("gemini", 1), ("gemini", 1), ("openai", 0), ("openai", 0), ("anthropic", 0),
                                   ("anthropic", 0)):
                key = f"sk-soak-{kind}-{uuid.uuid4().hex}"
                sim.call("POST", "api-keys", {"key": key, "kind": kind})
                cli("add-key", "--kind", kind, "--api-key", key, "--base-url", bases[kind], "--priority", str(priority))
                accounts.setdefault(kind, []).append(key)
            sim.behave("slow", {"model": SLOW_MODEL}, None, chunk_delay=0.5)
            sim.call("POST", "settings", {"events": 4})
            log = open(home / "gateway.log", "w")
            proc = subprocess.Popen([str(BIN / "switchyard"), "run", "-q"], env=env, stdout=log, stderr=subprocess.STDOUT)
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, proc)
            yield proc, url, api_key, sim, accounts, home
        finally:
            stop_all(procs)


def soak(requests: int, concurrency: int, seed: int, *, middle: bool = True,
         progress: Callable[[str], None] = lambda line: print(line, flush=True)) -> Report:
    """Warm-up, a measurement, half the load, a measurement (unless not `middle`), the rest, a
    measurement."""
    with gateway(concurrency) as (proc, url, api_key, sim, accounts, home):
        sim_port = int(sim.url.rsplit(":", 1)[1])
        watch = Watch(proc.pid, url, api_key, sim_port)
        load = Load(url, api_key, sim, accounts, seed)
        load.faulty = False
        asyncio.run(load.run(WARM_UP, concurrency))
        load.tally = Tally()
        load.faulty = True
        since = time.time()
        samples = [watch.settle("start", 0, drain=False)]
        progress(samples[-1].row())
        busy = 0.0
        phases = [("middle", requests // 2), ("end", requests - requests // 2)] if middle else [("end", requests)]
        for label, count in phases:
            t0 = time.monotonic()
            asyncio.run(load.run(count, concurrency))
            busy += time.monotonic() - t0
            load.clear_faults()
            samples.append(watch.settle(label, load.tally.sent, drain=label == "end"))
            progress(samples[-1].row())
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with status {proc.returncode}")
        ledger, rows = read_ledger(home / "data" / "usage.sqlite3", since, load.tally.sent)
        return Report(samples, load.tally, ledger, rows, busy)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000, help="requests after the warm-up (default 20000)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent callers (default 8)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the request and fault mix (default 1)")
    parser.add_argument("--max-rss-growth", type=float, default=30.0, help="MB (default 30)")
    args = parser.parse_args()
    report = soak(args.requests, args.concurrency, args.seed)
    print(report.text())
    flat = report.flat(args.max_rss_growth)
    print("flat: yes" if flat else "flat: NO")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
