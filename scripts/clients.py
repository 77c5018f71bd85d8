#!/usr/bin/env python3
"""clients: installs the real coding CLIs the end-to-end tests drive through the gateway.

Claude Code, Codex CLI and Gemini CLI come from the npm registry, pinned to the releases the
request fixtures in tests/fixtures/clients were captured from, into `.cache/clients/`
(git-ignored). Idempotent: when the pinned versions are present nothing is run.

Run:     python scripts/clients.py [--quiet] [--list]   (exit 1 with the reason on failure)
Import:  from clients import ensure; paths = ensure()  -> {"claude": Path, "codex": ..., "gemini": ...}
         raises ClientsUnavailable with a message that says what is missing and how to fix it.

Needs Node.js >= 20 with npm and the npm registry (or a configured mirror). A cold install
downloads ~250 MB (~740 MB unpacked; Codex and Claude Code ship native binaries) and took 42 s
on a 2-core machine; a warm run only reads a few package.json files.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
DIR = TOP / ".cache" / "clients"
# command -> (npm package, exact version). Keep these next to the fixtures' versions.
PINS: dict[str, tuple[str, str]] = {
    "claude": ("@anthropic-ai/claude-code", "2.1.197"),
    "codex": ("@openai/codex", "0.169.0"),
    "gemini": ("@google/gemini-cli", "0.61.0"),
}
MIN_NODE = 20  # Gemini CLI's engines field
INSTALL_TIMEOUT = 900  # seconds; a cold install takes well under a minute on a good link


class ClientsUnavailable(RuntimeError):
    pass


def _stamp() -> str:
    return json.dumps(sorted(PINS.items()))


def installed(root: Path = DIR) -> dict[str, Path] | None:
    """The CLIs' launchers when every pinned version is in place, else None."""
    try:
        if (root / ".installed").read_text() != _stamp():
            return None
    except OSError:
        return None
    paths: dict[str, Path] = {}
    for command, (package, version) in PINS.items():
        try:
            meta = json.loads((root / "node_modules" / package / "package.json").read_text())
        except (OSError, ValueError):
            return None
        launcher = root / "node_modules" / ".bin" / command
        if meta.get("version") != version or not launcher.exists():
            return None
        paths[command] = launcher
    return paths


def _node_problem() -> str | None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        return (f"{missing} not found on PATH: the real-client tests need Node.js >= {MIN_NODE} with npm "
                "(https://nodejs.org or your OS packages), and the npm registry")
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        major = int(out.lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return "could not run `node --version`"
    if major < MIN_NODE:
        return f"Node.js {out} is too old: Gemini CLI {PINS['gemini'][1]} needs Node.js >= {MIN_NODE}"
    return None


def ensure(root: Path = DIR, *, quiet: bool = False) -> dict[str, Path]:
    """Installs the pinned CLIs into `root` unless present; their launchers."""
    if (paths := installed(root)) is not None:
        return paths
    if problem := _node_problem():
        raise ClientsUnavailable(problem)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second installer waits, then finds it done
        if (paths := installed(root)) is not None:
            return paths
        return _install(root, quiet)


def _install(root: Path, quiet: bool) -> dict[str, Path]:
    names = ", ".join(f"{p}@{v}" for p, v in PINS.values())
    if not quiet:
        print(f"switchyard: installing {names} into {root.relative_to(TOP) if root.is_relative_to(TOP) else root}"
              " (first run: ~1 min)", file=sys.stderr, flush=True)
    with contextlib.suppress(FileNotFoundError):
        (root / ".installed").unlink()
    manifest = {"name": "switchyard-test-clients", "private": True,
                "description": "Written by scripts/clients.py; the CLIs tests/test_real_clients.py drives.",
                "dependencies": {package: version for package, version in PINS.values()}}
    (root / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log = root / "install.log"
    # Fewer, shorter retries than npm's defaults (which take 3.5 min to give up on a dead registry).
    argv = ["npm", "install", "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=error",
            "--fetch-retries=2", "--fetch-retry-mintimeout=2000", "--fetch-retry-maxtimeout=10000"]
    env = {**os.environ, "npm_config_update_notifier": "false"}
    started = time.monotonic()
    try:
        result = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ClientsUnavailable(f"`npm install` of {names} did not finish within {INSTALL_TIMEOUT} s "
                                 "(is the npm registry reachable?)") from None
    log.write_text(f"$ {' '.join(argv)}  (in {root}, {time.monotonic() - started:.1f} s, exit {result.returncode})\n"
                   f"{result.stdout}{result.stderr}")
    if result.returncode != 0:
        lines = (result.stdout + result.stderr).strip().splitlines()
        gist = [ln for ln in lines if not ln.startswith("npm error     at ")][:8]  # no stack traces
        raise ClientsUnavailable(f"`npm install` of {names} failed with exit {result.returncode} "
                                 f"(is the npm registry reachable?); full output in {log}:\n" + "\n".join(gist))
    (root / ".installed").write_text(_stamp())
    if (paths := installed(root)) is None:
        raise ClientsUnavailable(f"`npm install` succeeded but the pinned CLIs are not all in {root}; see {log}")
    if not quiet:
        print(f"switchyard: installed the CLIs in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet", action="store_true", help="print nothing unless it fails")
    parser.add_argument("--list", action="store_true", help="print each CLI's version and launcher")
    parser.add_argument("--dir", type=Path, default=DIR, help=f"install directory (default {DIR})")
    args = parser.parse_args()
    try:
        paths = ensure(args.dir.resolve(), quiet=args.quiet)
    except ClientsUnavailable as e:
        print(f"switchyard: cannot install the real clients: {e}", file=sys.stderr)
        return 1
    if args.list:
        for command, path in paths.items():
            print(f"{command}\t{PINS[command][0]}@{PINS[command][1]}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
