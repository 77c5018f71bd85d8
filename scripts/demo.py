"""Switchyard's demo: the gateway in front of the built-in simulated upstream, in a throw-away home.

    ./scripts/demo            run until Ctrl-C, with mitmweb's live view of every flow (its URL and
                              token are printed); point any client at the printed base URL
    ./scripts/demo --no-web   the same with plain mitmdump
    ./scripts/demo --check    send one request per protocol (streamed and not) with the official
                              SDKs, print the answers, stop, exit 0 when all were right
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import httpx
import tomli_w

TOP = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from simupstream import DEMO  # noqa: E402

SIM_CLIENT = ("sim-client-id", "sim-client-secret")


def free_port(preferred: int | None = None) -> int:
    candidates = [preferred] if preferred else []
    for port in [*candidates, 0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def start_sim(log: Path) -> tuple[subprocess.Popen, str]:
    out = open(log, "w")
    proc = subprocess.Popen(
        [sys.executable, str(TOP / "scripts" / "simupstream.py"), "--demo", "--port", "0"],
        stdout=subprocess.PIPE, stderr=out, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"(http://\S+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"the simulated upstream did not start: {line!r} (see {log})")
    return proc, match.group(1)


def write_config(home: Path, sim: str, port: int) -> str:
    api_key = "sk-demo-" + os.urandom(8).hex()
    config = {
        "proxy": {"port": port, "api_key": api_key, "request_timeout": 60},
        "upstreams": {
            "antigravity": {
                "endpoints": [f"{sim}/v1internal"],
                "token_url": f"{sim}/token",
                # "Sign in with Google" on the dashboard goes to the simulated Google's page.
                "auth_url": f"{sim}/o/oauth2/v2/auth",
                "userinfo_url": f"{sim}/userinfo",
                "client_id": SIM_CLIENT[0],
                "client_secret": SIM_CLIENT[1],
            },
            "gemini": {"base_url": sim},
        },
    }
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_bytes(tomli_w.dumps(config).encode())
    return api_key


def add_accounts(env: dict[str, str], sim: str) -> None:
    def cli(*args: str) -> None:
        subprocess.run([str(BIN / "switchyard"), "accounts", *args], env=env, check=True, stdout=subprocess.DEVNULL)

    for account in DEMO["google"]:
        cli("add-google", "--refresh-token", account["refresh_token"], "--email", account["email"])
    base_urls = {"gemini": sim, "openai": f"{sim}/v1", "anthropic": sim}
    for key in DEMO["keys"]:
        kind = key["kind"]
        # Key accounts are a fallback here (priority 1): the Google accounts serve first.
        cli("add-key", "--kind", kind, "--api-key", key["key"], "--base-url", base_urls[kind],
            "--priority", "1", "--label", f"demo-{kind}")


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with status {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("the gateway did not become healthy in time")


class Output:
    """Passes the gateway's output on line by line and catches mitmweb's URL (with its token) in it."""

    WEB_URL = re.compile(r"Web server listening at (http://\S+)")

    def __init__(self, source: IO[str], sink: IO[str]) -> None:
        self.web_url: str | None = None
        self._seen = threading.Event()
        threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: IO[str], sink: IO[str]) -> None:
        for line in source:
            sink.write(line)
            sink.flush()
            if self.web_url is None and (match := self.WEB_URL.search(line)):
                self.web_url = match.group(1)
                self._seen.set()
        self._seen.set()

    def wait_for_web_url(self, timeout: float = 10) -> str | None:
        self._seen.wait(timeout)
        return self.web_url


@contextlib.contextmanager
def running(web: bool, quiet: bool) -> Iterator[tuple[str, str, subprocess.Popen, Path, str | None]]:
    with tempfile.TemporaryDirectory(prefix="switchyard-demo-") as tmp:
        home = Path(tmp)
        sim_proc, sim = start_sim(home / "simupstream.log")
        procs = [sim_proc]
        try:
            port = free_port(8045)
            api_key = write_config(home, sim, port)
            env = {**os.environ, "SWITCHYARD_HOME": str(home)}
            add_accounts(env, sim)
            argv = [str(BIN / "switchyard"), "run", *(["--web"] if web else [])]
            if web:
                argv += ["--set", "web_open_browser=false", "--set", f"web_port={free_port(8081)}"]
            log = open(home / "gateway.log", "w") if quiet else sys.stdout
            gateway = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append(gateway)
            assert gateway.stdout is not None
            output = Output(gateway.stdout, log)
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, gateway)
            yield url, api_key, gateway, home, output.wait_for_web_url() if web else None
        finally:
            stop_all(procs)


def stop_all(procs: list[subprocess.Popen]) -> None:
    """Stops processes newest first, as Ctrl-C would; kills what does not stop in 10 s."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def explain(url: str, api_key: str, web_url: str | None) -> None:
    web = f"  mitmweb:        {web_url}  (every flow, live)\n" if web_url else ""
    print(
        f"""
Switchyard demo is running at {url}  (API key {api_key})
  dashboard:      {url}/ui/  (accounts, usage, requests, settings)
{web}  OpenAI SDK:     base_url="{url}/v1", api_key="{api_key}"
  Anthropic SDK:  base_url="{url}", api_key="{api_key}"
  Google GenAI:   http_options={{"base_url": "{url}"}}, api_key="{api_key}"
  try: curl {url}/v1/chat/completions -H 'authorization: Bearer {api_key}' \\
         -H 'content-type: application/json' -d '{{"model": "gemini-2.5-flash", "messages": [{{"role": "user", "content": "hello"}}]}}'
Ctrl-C stops it and deletes the demo's home.
""",
        flush=True,
    )


# --- --check ---------------------------------------------------------------------------------


def checks(url: str, api_key: str) -> list[tuple[str, Callable[[], str]]]:
    import anthropic
    import openai
    from google import genai

    oai = openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=30)
    ant = anthropic.Anthropic(base_url=url, api_key=api_key, max_retries=0, timeout=30)
    gem = genai.Client(api_key=api_key, http_options={"base_url": url, "timeout": 30_000})
    model = "gemini-2.5-flash"
    prompt = "hello from the demo"

    def chat() -> str:
        answer = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}])
        return answer.choices[0].message.content or ""

    def chat_stream() -> str:
        stream = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], stream=True)
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    def completions() -> str:
        return oai.completions.create(model=model, prompt=prompt, max_tokens=64).choices[0].text

    def completions_stream() -> str:
        stream = oai.completions.create(model=model, prompt=prompt, max_tokens=64, stream=True)
        return "".join(chunk.choices[0].text for chunk in stream if chunk.choices)

    def responses() -> str:
        return oai.responses.create(model=model, input=prompt).output_text

    def responses_stream() -> str:
        with oai.responses.stream(model=model, input=prompt) as stream:
            return stream.get_final_response().output_text

    def messages() -> str:
        answer = ant.messages.create(model=model, max_tokens=256, messages=[{"role": "user", "content": prompt}])
        return "".join(block.text for block in answer.content if block.type == "text")

    def messages_stream() -> str:
        with ant.messages.stream(model=model, max_tokens=256, messages=[{"role": "user", "content": prompt}]) as stream:
            return stream.get_final_text()

    def gemini() -> str:
        return gem.models.generate_content(model=model, contents=prompt).text or ""

    def gemini_stream() -> str:
        return "".join(chunk.text or "" for chunk in gem.models.generate_content_stream(model=model, contents=prompt))

    return [
        ("openai chat", chat), ("openai chat (stream)", chat_stream),
        ("openai completions", completions), ("openai completions (stream)", completions_stream),
        ("openai responses", responses), ("openai responses (stream)", responses_stream),
        ("anthropic messages", messages), ("anthropic messages (stream)", messages_stream),
        ("gemini generateContent", gemini), ("gemini streamGenerateContent", gemini_stream),
    ]


def run_checks(url: str, api_key: str) -> bool:
    ok = True
    for name, check in checks(url, api_key):
        try:
            answer = check()
            good = "hello from the demo" in answer
        except Exception as e:  # a failed check is reported, then the next one runs
            answer, good = f"{type(e).__name__}: {e}", False
        ok &= good
        print(f"{'ok ' if good else 'FAIL'} {name:32} {answer[:80]!r}", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description="Switchyard against its simulated upstream")
    parser.add_argument("--check", action="store_true", help="send one request per protocol, then stop")
    parser.add_argument("--web", action="store_true", help="with --check: run mitmweb instead of mitmdump")
    parser.add_argument("--no-web", action="store_true", help="run plain mitmdump instead of mitmweb")
    args = parser.parse_args()
    # `kill` stops it as Ctrl-C does: the simulated upstream and the gateway go with it.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        web = args.web or not (args.check or args.no_web)  # the live view, unless only checking
        with running(web, quiet=args.check) as (url, api_key, gateway, home, web_url):
            if args.check:
                ok = run_checks(url, api_key)
                print("demo check passed" if ok else f"demo check FAILED (gateway log: {home / 'gateway.log'})")
                if not ok:
                    print((home / "gateway.log").read_text()[-4000:])
                return 0 if ok else 1
            explain(url, api_key, web_url)
            with contextlib.suppress(KeyboardInterrupt):
                gateway.wait()
            return 0
    except KeyboardInterrupt:  # stopped before it was up: what had started is stopped already
        return 130
    except RuntimeError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
