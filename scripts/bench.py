"""Switchyard's benchmark: what the gateway adds on top of its upstream, next to bare mitmdump.

    .venv/bin/python scripts/bench.py [--requests 1000] [--quick] [--runs 3] [--replicas 2]

In one run, against the simulated upstream (one process), it measures p50/p99 latency, the p50
time to the first content chunk and requests per second for:
  (a) the simulated upstream directly (v1internal generateContent, and streamGenerateContent),
  (b) bare `mitmdump -q` as a reverse proxy in front of it (the same calls), with
      `stream_large_bodies=1` so that it streams every body as Switchyard streams a stream,
  (c) Switchyard (`switchyard run -q`): OpenAI chat in, a Google account out, whole answers,
      and streams (time to the first content chunk and to the end),
at concurrency 1 and 16 (with the CPU time per request of the process that served each row),
prints a table, then the ratios the gateway is judged by: its added p50
over bare mitmdump's (whole answers; a stream's first chunk) at c=1, and its requests per second
against bare mitmdump's at c=16. The client is a minimal keep-alive HTTP/1.1 client on asyncio,
so its own cost stays small and equal for all rows. The rows of one concurrency are measured in
turns (a slice of each row, then the next round), since the speed of a small shared machine
drifts over seconds; still, compare rows of one run, not runs (`--runs N` repeats the rows
against the same processes and prints each run's ratios and their medians).

Then (d): `--replicas N` gateways (default 2) on this machine sharing one pool through a
throw-away redis-server (scripts/replicas.py), 16 callers spread over them, whole answers and
streams, with their combined requests per second against the one process of (c) at c=16, in
turns with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import tomli_w

TOP = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(TOP / "scripts"))

from demo import free_port, start_sim, stop_all, wait_healthy  # noqa: E402
from replicas import Replicas  # noqa: E402
from simupstream import client_headers  # noqa: E402


# --- a small client ----------------------------------------------------------------------------


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader, self.writer, self.port = reader, writer, port

    @classmethod
    async def open(cls, port: int) -> "Connection":
        return cls(*await asyncio.open_connection("127.0.0.1", port), port)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[float, float]:
        """Sends one request; returns (seconds to the first body chunk, seconds to the end)."""
        head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        start = time.perf_counter()
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        if b" 200 " not in status_line:
            raise RuntimeError(f"unexpected answer: {status_line!r}")
        length, chunked = None, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value:
                chunked = True
        first = None
        if not chunked:
            await self.reader.readexactly(length or 0)
            first = time.perf_counter() - start
        else:
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    break
                data = await self.reader.readexactly(size + 2)
                if first is None and b"content" in data or first is None and b'"text"' in data:
                    first = time.perf_counter() - start
        end = time.perf_counter() - start
        return (first if first is not None else end), end

    def close(self) -> None:
        self.writer.close()


@dataclass
class Result:
    name: str
    concurrency: int
    first: list[float]
    total: list[float]
    seconds: float
    cpu: float | None = None  # CPU seconds the serving process spent on the measured requests

    @staticmethod
    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000

    @property
    def rps(self) -> float:
        return len(self.total) / self.seconds

    def row(self) -> str:
        return (
            f"{self.name:34} {self.concurrency:>3}  p50 {self.pct(self.total, 0.5):7.2f} ms  p99 {self.pct(self.total, 0.99):7.2f} ms"
            f"  first p50 {self.pct(self.first, 0.5):7.2f} ms  {self.rps:7.0f} req/s"
            + (f"  cpu {self.cpu / len(self.total) * 1000:5.2f} ms/req" if self.cpu is not None else "")
        )


def cpu_seconds(pid: int | Sequence[int] | None) -> float | None:
    """User + system CPU of processes so far (Linux), or None where /proc cannot tell."""
    total = 0.0
    for one in [pid] if pid is None or isinstance(pid, int) else pid:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError, TypeError):
            return None
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@dataclass
class Row:
    name: str
    port: int | Sequence[int]  # several gateways (replicas): the callers' connections spread over them in turn
    path: str
    body: bytes
    headers: dict[str, str]
    pid: int | Sequence[int] | None = None  # whose CPU counts (every process of the row)


async def measure(rows: Sequence[Row], concurrency: int, count: int, rounds: int = 10) -> list[Result]:
    """`count` requests per row at `concurrency`, in `rounds` slices taken in turn (row A's
    slice, then B's, ...; the order rotates each round), so that every row meets the machine in
    the same moods: on a small shared machine its speed drifts over seconds, which would
    otherwise land on whichever row ran at the time."""
    connections = {row.name: [await Connection.open(_ports(row)[n % len(_ports(row))]) for n in range(concurrency)] for row in rows}
    for row in rows:  # warm-up
        for conn in connections[row.name]:
            for _ in range(5):
                await conn.post(row.path, row.body, row.headers)
    first: dict[str, list[float]] = {row.name: [] for row in rows}
    total: dict[str, list[float]] = {row.name: [] for row in rows}
    seconds = dict.fromkeys(first, 0.0)
    cpu: dict[str, float | None] = dict.fromkeys(first, 0.0)
    per_conn = max(count // concurrency // rounds, 1)

    async def worker(row: Row, conn: Connection) -> None:
        for _ in range(per_conn):
            f, t = await conn.post(row.path, row.body, row.headers)
            first[row.name].append(f)
            total[row.name].append(t)

    for turn in range(rounds):
        for row in rows[turn % len(rows):] + rows[: turn % len(rows)]:
            start, cpu_start = time.perf_counter(), cpu_seconds(row.pid)
            await asyncio.gather(*(worker(row, c) for c in connections[row.name]))
            seconds[row.name] += time.perf_counter() - start
            cpu_end, spent = cpu_seconds(row.pid), cpu[row.name]
            cpu[row.name] = None if cpu_start is None or cpu_end is None or spent is None else spent + cpu_end - cpu_start
    for conns in connections.values():
        for conn in conns:
            conn.close()
    return [Result(row.name, concurrency, first[row.name], total[row.name], seconds[row.name], cpu[row.name]) for row in rows]


def slices(count: int, concurrency: int) -> int:
    """Rounds for `count` requests: up to 25, each with at least 4 requests per connection."""
    return max(1, min(25, count // (concurrency * 4)))


def _ports(row: Row) -> list[int]:
    return [row.port] if isinstance(row.port, int) else list(row.port)


# --- the parts ---------------------------------------------------------------------------------


def spawn(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


UPSTREAM, BARE, WHOLE, STREAM = "(a) simulated upstream", "(b) bare mitmdump", "(c) switchyard chat", "stream"
GOALS = {"added p50, whole (c=1)": ("<=", 1.3), "added p50, stream first chunk (c=1)": ("<=", 1.3),
         "req/s, whole (c=16)": (">=", 0.9), "req/s, stream (c=16)": (">=", 0.9)}


def ratios(results: list[Result]) -> dict[str, float]:
    """Switchyard against bare mitmdump, as the goals read: added p50 over the upstream at c=1
    (whole answers; a stream's first content chunk) and requests per second at c=16."""
    by = {(r.name, r.concurrency): r for r in results}

    def added(name: str, first: bool) -> float:
        mine = by[(name, 1)]
        base = by[(f"{UPSTREAM}, {'stream' if first else 'whole'}", 1)]
        return Result.pct(mine.first if first else mine.total, 0.5) - Result.pct(base.first if first else base.total, 0.5)

    return {
        "added p50, whole (c=1)": added(f"{WHOLE}, whole", False) / added(f"{BARE}, whole", False),
        "added p50, stream first chunk (c=1)": added(f"{WHOLE}, {STREAM}", True) / added(f"{BARE}, stream", True),
        "req/s, whole (c=16)": by[(f"{WHOLE}, whole", 16)].rps / by[(f"{BARE}, whole", 16)].rps,
        "req/s, stream (c=16)": by[(f"{WHOLE}, {STREAM}", 16)].rps / by[(f"{BARE}, stream", 16)].rps,
    }


def verdict(name: str, value: float) -> str:
    op, goal = GOALS[name]
    met = value <= goal if op == "<=" else value >= goal
    return f"{name:38} {value:5.2f}x  (goal {op} {goal}x: {'met' if met else 'NOT met'})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="requests per row (default 1000)")
    parser.add_argument("--quick", action="store_true", help="100 requests per row")
    parser.add_argument("--runs", type=int, default=1, help="measure every row this many times (default 1)")
    parser.add_argument("--replicas", type=int, default=2,
                        help="then N gateways sharing one pool through Redis, against one (default 2; 0: skip)")
    args = parser.parse_args()
    count = 100 if args.quick else args.requests
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="switchyard-bench-") as tmp:
        home = Path(tmp)
        try:
            sim_proc, sim = start_sim(home / "sim.log")
            procs.append(sim_proc)
            sim_port = int(sim.rsplit(":", 1)[1])
            token = httpx.post(f"{sim}/token", data={
                "grant_type": "refresh_token", "client_id": "sim-client-id", "client_secret": "sim-client-secret",
                "refresh_token": "sim-demo-refresh-1",
            }).json()["access_token"]
            envelope = json.dumps({
                "project": "demo-project-1", "model": "gemini-2.5-flash", "userAgent": "antigravity",
                "requestType": "agent", "requestId": "bench",
                "request": {"contents": [{"role": "user", "parts": [{"text": "hello benchmark"}]}]},
            }).encode()
            # The identity Cloud Code serves (an unknown client would get the "no longer supported" answer).
            direct_headers = {"authorization": f"Bearer {token}", "content-type": "application/json",
                              **client_headers()}

            mitm_port = free_port()
            # Bare mitmdump streams every body (any size over 1 byte), as Switchyard streams a stream.
            bare = spawn([str(BIN / "mitmdump"), "-q", "--mode", f"reverse:{sim}@127.0.0.1:{mitm_port}",
                          "--set", "stream_large_bodies=1"])
            procs.append(bare)

            gw_port = free_port()
            api_key = "sk-bench-" + os.urandom(6).hex()
            config = {
                "proxy": {"port": gw_port, "api_key": api_key, "request_timeout": 60},
                "upstreams": {"antigravity": {
                    "endpoints": [f"{sim}/v1internal"], "token_url": f"{sim}/token",
                    "client_id": "sim-client-id", "client_secret": "sim-client-secret",
                }},
            }
            (home / "config.toml").write_bytes(tomli_w.dumps(config).encode())
            (home / "config.toml").chmod(0o600)  # it holds the admin key
            env = {**os.environ, "SWITCHYARD_HOME": str(home)}
            subprocess.run([str(BIN / "switchyard"), "accounts", "add-google", "--refresh-token", "sim-demo-refresh-1",
                            "--email", "demo1@example.com"], env=env, check=True, stdout=subprocess.DEVNULL)
            gateway = spawn([str(BIN / "switchyard"), "run", "-q"], env)
            procs.append(gateway)
            wait_port(mitm_port)
            wait_healthy(f"http://127.0.0.1:{gw_port}", gateway)
            time.sleep(1.0)  # let the pool's first quota refresh finish

            chat = json.dumps({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hello benchmark"}]}).encode()
            stream = json.dumps({"model": "gemini-2.5-flash", "stream": True,
                                 "messages": [{"role": "user", "content": "hello benchmark"}]}).encode()
            gw_headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
            whole_path, stream_path = "/v1internal:generateContent", "/v1internal:streamGenerateContent?alt=sse"
            rows = [
                Row(f"{UPSTREAM}, whole", sim_port, whole_path, envelope, direct_headers, sim_proc.pid),
                Row(f"{UPSTREAM}, stream", sim_port, stream_path, envelope, direct_headers, sim_proc.pid),
                Row(f"{BARE}, whole", mitm_port, whole_path, envelope, direct_headers, bare.pid),
                Row(f"{BARE}, stream", mitm_port, stream_path, envelope, direct_headers, bare.pid),
                Row(f"{WHOLE}, whole", gw_port, "/v1/chat/completions", chat, gw_headers, gateway.pid),
                Row(f"{WHOLE}, {STREAM}", gw_port, "/v1/chat/completions", stream, gw_headers, gateway.pid),
            ]
            runs: list[dict[str, float]] = []
            for run in range(args.runs):
                if args.runs > 1:
                    print(f"run {run + 1} of {args.runs}")
                results: list[Result] = []
                for concurrency in (1, 16):
                    results += asyncio.run(measure(rows, concurrency, count, rounds=slices(count, concurrency)))
                    for result in results[-len(rows):]:
                        print(result.row(), flush=True)
                runs.append(ratios(results))
                print()
                for name, value in runs[-1].items():
                    print(verdict(name, value))
                print(flush=True)
            if args.runs > 1:
                print(f"medians of {args.runs} runs:")
                for name in GOALS:
                    print(verdict(name, statistics.median(r[name] for r in runs)))
            if args.replicas > 1:
                group = Replicas(home / "replicas", args.replicas, config).start(
                    lambda cli: cli("accounts", "add-google", "--refresh-token", "sim-demo-refresh-1", "--email", "demo1@example.com"))
                procs.extend(group.procs)
                try:
                    print(f"{args.replicas} replicas sharing one pool through Redis, c=16 spread over them, against one process:")
                    for kind, body in (("whole", chat), (STREAM, stream)):
                        one, many = asyncio.run(measure([
                            Row(f"{WHOLE}, {kind}", gw_port, "/v1/chat/completions", body, gw_headers, gateway.pid),
                            Row(f"(d) {args.replicas} replicas, {kind}", group.ports, "/v1/chat/completions", body, gw_headers, group.pids),
                        ], 16, count, rounds=slices(count, 16)))
                        print(one.row())
                        print(many.row())
                        print(f"  combined {many.rps:.0f} req/s = {many.rps / one.rps:.2f}x one process", flush=True)
                finally:
                    group.stop()
        finally:
            stop_all(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
