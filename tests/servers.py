"""Throw-away Redis and PostgreSQL servers for the cluster tests (Debian's redis-server and
postgresql packages; `.ci/run` installs them): each on a free loopback port with a temp dir of its
own, started and stopped by the test module that uses it.

PostgreSQL's initdb refuses to run as root: as root the cluster is made and run as the
`postgres` user (runuser), in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REDIS_PASSWORD = "redis-secret-" + os.urandom(4).hex()
PG_PASSWORD = "pg-secret-" + os.urandom(4).hex()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout} s")
        time.sleep(0.05)


class RedisServer:
    """`redis-server` on 127.0.0.1, with a password, no persistence: a restart comes back empty,
    as a Redis that lost its data would."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="switchyard-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server; .ci/run does)")
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
                "--appendonly", "no", "--requirepass", REDIS_PASSWORD, "--daemonize", "no", "--loglevel", "warning"]
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: _listening(self.port), 10, "redis-server")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql; .ci/run does)")
    return found


class Postgres:
    """A PostgreSQL cluster made with initdb in a temp dir, on 127.0.0.1 only, password auth
    (SCRAM) for the `switchyard` user and its database."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="switchyard-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://switchyard:{PG_PASSWORD}@127.0.0.1:{self.port}/switchyard"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        result = subprocess.run([*self.as_user, *argv], capture_output=True, text=True, timeout=120, cwd=self.dir)
        if result.returncode != 0:
            log = self.dir / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stdout}{result.stderr}{tail}")

    def start(self) -> "Postgres":
        password_file = self.dir / "password"
        password_file.write_text(PG_PASSWORD + "\n")
        if self.as_user:
            shutil.chown(password_file, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "switchyard", "--auth=scram-sha-256",
                  f"--pwfile={password_file}", "--no-sync", "-E", "UTF8", "--locale=C")
        self.resume()
        import psycopg

        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE DATABASE switchyard")
        return self

    def resume(self) -> None:
        """Starts the cluster made by `start` (again, after `stop`), on the same port."""
        options = f"-p {self.port} -h 127.0.0.1 -k {self.dir} -c fsync=off -c full_page_writes=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "postgres.log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
