"""End to end with the real coding CLIs: Claude Code, Codex CLI and Gemini CLI -> a real gateway
(`switchyard run`) -> the simulated upstream.

The CLIs are the npm releases the request fixtures were captured from, installed into
`.cache/clients` by `scripts/clients.py` (which `./scripts/test` runs first). Without Node.js/npm
these tests FAIL with the reason; they never skip.

Four gateways ("flavours"):
- mapped:  one Google account; `[model_mapping]` sends claude-* and gpt-* to gemini-2.5-flash,
           and Gemini CLI asks for gemini-2.5-flash (as in its fixture). The main case.
- builtin: one Google account, no mapping: the CLIs' own model names (claude-opus-4-8,
           gpt-5-codex, gemini-3.1-pro-preview) resolve by family to the newest served model,
           thinking models with thought signatures included.
- claude:  one Google account, every CLI on a Claude model behind Cloud Code (Claude Code's
           claude-opus-4-8, Codex's gpt-5-codex mapped to claude-sonnet-4-6, Gemini CLI asking
           for claude-sonnet-4-6 itself): Claude's rules there for every protocol.
- keys:    API-key accounts of each CLI's own protocol (Anthropic, OpenAI, Gemini): same-protocol
           pass-through for Claude Code and Gemini CLI, Responses -> chat completions for Codex.

Each CLI runs non-interactively in its own throw-away HOME and working directory, with a minimal
environment (nothing of the caller's leaks in: no real keys, no proxies), no telemetry, no update
checks and no login, bounded by CLI_TIMEOUT. The simulated model echoes the last text part of the
last user turn (the CLIs put their own context before the prompt in that turn), and
`[[call NAME {json}]]` makes it call one of the CLI's own tools, which the CLI then really runs
(in its default permission mode: the tools used are read-only); the next turn answers
"tool result: <what the tool returned>". With a search tool at hand, `[[search QUERY]]` makes it
search the web (the sim's three pages for QUERY).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w

import clients  # scripts/clients.py; conftest puts scripts/ on sys.path
from conftest import Gateway, prepare_gateway
from pool import mapping
from sim.util import search_answer, search_hits
from simupstream import DEFAULT_GOOGLE_MODELS, DEFAULT_KEY_MODELS

CLI_TIMEOUT = 90  # seconds per CLI run; one takes 1-8 s here
CLIENTS = ("claude", "codex", "gemini")
KEY_KIND = {"claude": "anthropic", "codex": "openai", "gemini": "gemini"}  # each CLI's own protocol


@dataclass(frozen=True)
class Flavour:
    model_mapping: dict[str, str]
    # The model each CLI asks for: Claude Code's and Codex's defaults; Gemini CLI's is named with
    # -m, because without it the CLI first asks a flash-lite model to pick one, with a JSON schema
    # the simulated model cannot follow, and then backs off for over a minute.
    requested: dict[str, str]
    keys: bool  # API-key accounts (one per CLI protocol) instead of one Google account

    def served(self, client: str) -> mapping.Served:
        return mapping.Served(DEFAULT_KEY_MODELS[KEY_KIND[client]] if self.keys else DEFAULT_GOOGLE_MODELS)


FLAVOURS = {
    "mapped": Flavour(
        {"claude-*": "gemini-2.5-flash", "gpt-*": "gemini-2.5-flash"},
        {"claude": "claude-opus-4-8", "codex": "gpt-5-codex", "gemini": "gemini-2.5-flash"},
        keys=False,
    ),
    "builtin": Flavour(
        {}, {"claude": "claude-opus-4-8", "codex": "gpt-5-codex", "gemini": "gemini-3.1-pro-preview"}, keys=False
    ),
    # Every CLI on a Claude model behind Cloud Code: Claude's rules there (call ids, thinking,
    # schemas) for Anthropic, Responses and Gemini callers alike.
    "claude": Flavour(
        {"gpt-*": "claude-sonnet-4-6"},
        {"claude": "claude-opus-4-8", "codex": "gpt-5-codex", "gemini": "claude-sonnet-4-6"},
        keys=False,
    ),
    "keys": Flavour(
        {"claude-*": "claude-sonnet-4-5", "gpt-*": "gpt-4.1"},
        {"claude": "claude-opus-4-8", "codex": "gpt-5-codex", "gemini": "gemini-2.5-flash"},
        keys=True,
    ),
}


@pytest.fixture(scope="module")
def cli() -> dict[str, Path]:
    try:
        return clients.ensure()
    except clients.ClientsUnavailable as e:
        problem = str(e)
    pytest.fail(f"the real CLIs are not available: {problem}", pytrace=False)


@pytest.fixture(scope="module", params=list(FLAVOURS))
def gateway(request, sim, tmp_path_factory):
    flavour = FLAVOURS[request.param]
    config = {"proxy": {"request_timeout": 30}, "model_mapping": flavour.model_mapping}
    gw = prepare_gateway(sim, tmp_path_factory.mktemp(f"clients-{request.param}"), config)
    gw.flavour = flavour
    gw.email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    if flavour.keys:
        for kind in KEY_KIND.values():
            gw.add_key(kind)
    else:
        gw.add_google(gw.email)
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(autouse=True)
def _echo_the_prompt(sim):
    sim.settings(echo_last_part=True)
    yield
    sim.settings(echo_last_part=False)


# --- what the upstream saw ---------------------------------------------------------------------------


def generations(sim, gateway: Gateway, client: str) -> list[dict[str, Any]]:
    """The simulated upstream's log of model calls made for this gateway's `client` account."""
    if gateway.flavour.keys:
        entries = sim.log(KEY_KIND[client])
    else:
        entries = [e for e in sim.log("google") if e["account"] == gateway.email]
    return [e for e in entries if e["model"] and "count" not in e["path"].lower()]


def expect_upstream_calls(sim, gateway: Gateway, client: str, before: int, n: int) -> None:
    """`n` streamed generations, all answered 200, for the model the CLI's model name maps to."""
    flavour = gateway.flavour
    want = mapping.resolve(flavour.requested[client], flavour.model_mapping, flavour.served(client))
    calls = [(e["model"], e["stream"], e["status"]) for e in generations(sim, gateway, client)[before:]]
    assert calls == [(want, True, 200)] * n, f"{calls}\n--- gateway log (tail)\n{gateway.log()[-6000:]}"


# --- running a CLI ------------------------------------------------------------------------------------


@dataclass
class Run:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def report(self, gateway: Gateway) -> str:
        return (f"$ {' '.join(self.argv)}\nexit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n"
                f"{self.stderr[-6000:]}\n--- gateway log (tail)\n{gateway.log()[-8000:]}")


def run(argv: list[str], env: dict[str, str], cwd: Path, gateway: Gateway) -> Run:
    """Runs a CLI with no stdin, in its own process group, killed whole after CLI_TIMEOUT."""
    argv = [str(a) for a in argv]
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        late = Run(argv, -9, out, err)
        pytest.fail(f"{Path(argv[0]).name} did not finish within {CLI_TIMEOUT} s\n{late.report(gateway)}", pytrace=False)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return Run(argv, proc.returncode, out, err)


def base_env(home: Path) -> dict[str, str]:
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),  # node must be on it
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def claude_env(home: Path, gateway: Gateway) -> dict[str, str]:
    return {
        **base_env(home),
        "ANTHROPIC_BASE_URL": gateway.url,  # no /v1: Claude Code appends /v1/messages
        "ANTHROPIC_API_KEY": gateway.api_key,  # sent as x-api-key
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
    }


def codex_env(home: Path, gateway: Gateway) -> dict[str, str]:
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    config = {
        "model": gateway.flavour.requested["codex"],
        "model_provider": "switchyard",
        "check_for_update_on_startup": False,
        "analytics": {"enabled": False},
        "feedback": {"enabled": False},
        "model_providers": {
            "switchyard": {
                "name": "Switchyard",
                "base_url": f"{gateway.url}/v1",  # with /v1: Codex appends /responses
                "env_key": "SWITCHYARD_API_KEY",  # sent as Authorization: Bearer
                "wire_api": "responses",
            }
        },
    }
    (codex_home / "config.toml").write_text(tomli_w.dumps(config))
    return {**base_env(home), "CODEX_HOME": str(codex_home), "SWITCHYARD_API_KEY": gateway.api_key}


def gemini_env(home: Path, gateway: Gateway) -> dict[str, str]:
    settings = {
        # GOOGLE_GEMINI_BASE_URL alone selects the "gateway" auth type, which 0.61's
        # non-interactive check rejects ("Invalid auth method selected."): name the API-key type.
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
        "ide": {"enabled": False},
    }
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(settings, indent=2))
    return {
        **base_env(home),
        "GEMINI_API_KEY": gateway.api_key,  # sent as x-goog-api-key
        "GOOGLE_GEMINI_BASE_URL": gateway.url,  # no /v1beta: the SDK appends /v1beta/models/...
        "GEMINI_CLI_TRUST_WORKSPACE": "true",  # else -p refuses an untrusted folder (exit 55)
    }


def command(client: str, cli: dict[str, Path], gateway: Gateway, prompt: str) -> list[Any]:
    match client:
        case "claude":
            return [cli["claude"], "-p", prompt]
        case "codex":
            return [cli["codex"], "exec", "--skip-git-repo-check", prompt]
        case _:
            return [cli["gemini"], "-m", gateway.flavour.requested["gemini"], "-p", prompt]


ENV = {"claude": claude_env, "codex": codex_env, "gemini": gemini_env}
# A read-only tool of each CLI's own, which its default permissions let it run unasked.
TOOL_CALL = {
    "claude": '[[call Bash {"command": "ls", "description": "List the files"}]]',
    "codex": '[[call exec_command {"cmd": "ls"}]]',
    "gemini": '[[call list_directory {"dir_path": "."}]]',
}


def run_client(client: str, prompt: str, cli: dict[str, Path], gateway: Gateway, tmp_path: Path, marker: str) -> Run:
    work = tmp_path / "work"
    work.mkdir()
    (work / marker).write_text("made by the test\n")
    env = ENV[client](tmp_path / "home", gateway)
    return run(command(client, cli, gateway, prompt), env, work, gateway)


# --- the tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_cli_completes_a_prompt(client, cli, gateway, sim, tmp_path):
    prompt = f"hello from {client} {uuid.uuid4().hex[:8]}"
    before = len(generations(sim, gateway, client))
    result = run_client(client, prompt, cli, gateway, tmp_path, "file.txt")
    assert result.returncode == 0, result.report(gateway)
    assert result.stdout.strip() == f"echo: {prompt}", result.report(gateway)
    expect_upstream_calls(sim, gateway, client, before, 1)


@pytest.mark.parametrize("client", CLIENTS)
def test_cli_runs_a_tool(client, cli, gateway, sim, tmp_path):
    marker = f"marker-{uuid.uuid4().hex[:8]}.txt"
    before = len(generations(sim, gateway, client))
    result = run_client(client, f"list the files: {TOOL_CALL[client]}", cli, gateway, tmp_path, marker)
    assert result.returncode == 0, result.report(gateway)
    assert "tool result: " in result.stdout and marker in result.stdout, result.report(gateway)
    expect_upstream_calls(sim, gateway, client, before, 2)  # the call, then the answer to its result


def test_claude_code_goes_on_over_several_turns(cli, gateway, sim, tmp_path):
    """One conversation over three runs (`--continue`): each request carries the whole history —
    thinking with its signatures, tool calls and their results — which the upstream checks."""
    marker = f"marker-{uuid.uuid4().hex[:8]}.txt"
    work = tmp_path / "work"
    work.mkdir()
    (work / marker).write_text("made by the test\n")
    env = claude_env(tmp_path / "home", gateway)
    before = len(generations(sim, gateway, "claude"))
    turns = [
        ([f"list the files: {TOOL_CALL['claude']}"], "tool result: "),
        (["--continue", f"and now say {uuid.uuid4().hex[:8]}"], "echo: and now say"),
        (["--continue", f"list them again: {TOOL_CALL['claude']}"], "tool result: "),
    ]
    for extra, expected in turns:
        result = run([cli["claude"], "-p", *extra], env, work, gateway)
        assert result.returncode == 0, result.report(gateway)
        assert expected in result.stdout, result.report(gateway)
    assert marker in result.stdout, result.report(gateway)
    expect_upstream_calls(sim, gateway, "claude", before, 5)  # 2 + 1 + 2


# --- `switchyard connect --write`: the CLIs set up by the gateway itself ------------------------------

CONNECT_NAMES = {"claude": "claude-code", "codex": "codex", "gemini": "gemini-cli"}
# The user's own settings before `connect` (none of them about the connection), which must stay.
USER_SETTINGS = {
    "claude": (".claude/settings.json", json.dumps({"theme": "dark", "env": {"DISABLE_TELEMETRY": "1"}})),
    "codex": (".codex/config.toml", tomli_w.dumps({
        "check_for_update_on_startup": False, "analytics": {"enabled": False}, "feedback": {"enabled": False},
    })),
    "gemini": (".gemini/settings.json", json.dumps({
        "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False}, "ide": {"enabled": False},
    })),
}
CONNECTION_VARS = ("ANTHROPIC_", "OPENAI_", "GEMINI_API_KEY", "GOOGLE_", "CODEX_HOME", "CLAUDE_CONFIG_DIR", "XDG_CONFIG_HOME")


@pytest.fixture(scope="module")
def keyed_gateway(sim, tmp_path_factory):
    """One Google account, strict auth, and a client key per CLI."""
    config = {"proxy": {"request_timeout": 30}, "model_mapping": FLAVOURS["mapped"].model_mapping}
    gw = prepare_gateway(sim, tmp_path_factory.mktemp("clients-connect"), config)
    gw.email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    gw.add_google(gw.email)
    gw.client_keys = {}
    for client in CLIENTS:
        out = gw.cli("keys", "add", "--label", f"{client}-laptop").stdout
        gw.client_keys[client] = out.splitlines()[0].rsplit(" ", 1)[1]
    gw.start()
    yield gw
    gw.stop()


@pytest.mark.parametrize("client", CLIENTS)
def test_connect_write_sets_up_the_real_cli(client, cli, keyed_gateway, sim, tmp_path):
    """`switchyard connect X --key K --write` into a home with the user's own settings: the CLI,
    run with no connection settings in its environment, answers through the gateway with K."""
    gateway = keyed_gateway
    home = tmp_path / "home"
    relative, text = USER_SETTINGS[client]
    (home / relative).parent.mkdir(parents=True, exist_ok=True)
    (home / relative).write_text(text)
    env = {k: v for k, v in gateway.env.items() if not k.startswith(CONNECTION_VARS)}
    wrote = subprocess.run(
        [str(Path(sys.executable).parent / "switchyard"), "connect", CONNECT_NAMES[client], "--key",
         gateway.client_keys[client], "--write"],
        env={**env, "HOME": str(home)}, capture_output=True, text=True, timeout=60,
    )
    assert wrote.returncode == 0, wrote.stdout + wrote.stderr
    assert f"wrote {home / relative}" in wrote.stdout and ".bak-" in wrote.stdout
    assert gateway.client_keys[client] not in wrote.stdout
    written = (home / relative).read_text()
    kept = json.loads(text) if relative.endswith(".json") else tomllib.loads(text)
    now = json.loads(written) if relative.endswith(".json") else tomllib.loads(written)
    for key, value in kept.items():  # the user's settings are all still there
        assert now[key] == value if key != "env" else now[key].items() >= value.items(), key

    work = tmp_path / "work"
    work.mkdir()
    run_env = base_env(home)
    if client == "gemini":
        run_env["GEMINI_CLI_TRUST_WORKSPACE"] = "true"  # trust, not connection: -p refuses an untrusted folder
    argv = {"claude": [cli["claude"], "-p"], "codex": [cli["codex"], "exec", "--skip-git-repo-check"],
            "gemini": [cli["gemini"], "-p"]}[client]
    prompt = f"connected {client} {uuid.uuid4().hex[:8]}"
    before = len([e for e in sim.log("google") if e["account"] == gateway.email])
    result = run([*argv, prompt], run_env, work, gateway)
    assert result.returncode == 0, result.report(gateway)
    assert result.stdout.strip() == f"echo: {prompt}", result.report(gateway)
    assert len([e for e in sim.log("google") if e["account"] == gateway.email]) > before
    report = json.loads(gateway.cli("stats", "--by", "key", "--json").stdout)
    used = {row["key"]: row["requests"] for row in report["rows"]}
    assert used.get(f"{client}-laptop", 0) >= 1, (used, result.report(gateway))


def test_claude_code_searches_the_web(cli, gateway, sim, tmp_path):
    """Claude Code's WebSearch is a request of its own carrying Anthropic's web_search server tool
    (and forcing it). The gateway turns it into Google Search grounding on a Google account (a
    Gemini Flash searching for a Claude model, which Cloud Code does not ground) or passes it to an
    Anthropic key, and answers with the server_tool_use and web_search_tool_result blocks Claude
    Code reads: it reports a search with results ("Did 1 search") instead of "Did 0 searches"."""
    query = f"switchyard {uuid.uuid4().hex[:8]}"
    work = tmp_path / "work"
    work.mkdir()
    env = claude_env(tmp_path / "home", gateway)
    before = len(sim.log("anthropic")) if gateway.flavour.keys else len(generations(sim, gateway, "claude"))
    prompt = f'look it up: [[call WebSearch {{"query": "[[search {query}]]"}}]]'
    argv = [cli["claude"], "-p", prompt, "--allowedTools", "WebSearch", "--output-format", "stream-json", "--verbose"]
    result = run(argv, env, work, gateway)
    assert result.returncode == 0, result.report(gateway)
    messages = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    # What WebSearch reported (the numbers Claude Code's "Did N searches" line shows) ...
    searched = [m["tool_use_result"] for m in messages if isinstance(m.get("tool_use_result"), dict)]
    assert len(searched) == 1 and searched[0]["searchCount"] == 1, result.report(gateway)
    links = [item for found in searched[0]["results"] if isinstance(found, dict) for item in found["content"]]
    hits = search_hits(query)
    expected = [(h.title, h.url) for h in hits] if gateway.flavour.keys else [(h.domain, h.redirect) for h in hits]
    assert [(link["title"], link["url"]) for link in links] == expected, result.report(gateway)
    assert search_answer(query)[0] in searched[0]["results"], result.report(gateway)
    # ... and the main loop's model got it back as WebSearch's result.
    final = next(m for m in messages if m.get("type") == "result")
    assert final["result"].startswith("tool result: ") and hits[0].domain in final["result"], result.report(gateway)
    if gateway.flavour.keys:
        served = [e for e in sim.log("anthropic")[before:] if e["status"] == 200 and e["model"]]
        assert len(served) == 3, served  # the call, the search, the answer to the search's result
        return
    calls = generations(sim, gateway, "claude")[before:]
    searches = [(e["model"], e["status"]) for e in calls if e["request_type"] == "web_search"]
    assert len(calls) == 3 and len(searches) == 1 and searches[0][1] == 200, calls
    assert searches[0][0].startswith("gemini-") and "flash" in searches[0][0], searches


def test_gemini_cli_searches_the_web(cli, gateway, sim, tmp_path):
    """Gemini CLI's google_web_search asks a model of its own with the googleSearch tool and reads
    groundingMetadata, citing each supported span by its byte offsets: through the gateway the
    metadata arrives as Google sends it, and the marks land after the spans they cite."""
    query = f"switchyard {uuid.uuid4().hex[:8]}"
    work = tmp_path / "work"
    work.mkdir()
    env = gemini_env(tmp_path / "home", gateway)
    prompt = f'look it up: [[call google_web_search {{"query": "[[search {query}]]"}}]]'
    result = run([cli["gemini"], "-m", gateway.flavour.requested["gemini"], "-p", prompt], env, work, gateway)
    assert result.returncode == 0, result.report(gateway)
    first, second = search_answer(query)[0].split(". ")
    assert f"{first}.[1] {second}[2][3]" in result.stdout, result.report(gateway)
    for i, hit in enumerate(search_hits(query), 1):
        assert f"[{i}] {hit.domain} ({hit.redirect})" in result.stdout, result.report(gateway)
