"""Starting the gateway, client keys, and the accounts store as a running gateway sees it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time

import httpx
import openai
import pytest
import tomli_w

from conftest import API_KEY, BIN, TOP, free_port, prepare_gateway

MODEL = "gemini-2.5-flash"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def _write_config(home, **proxy):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_bytes(tomli_w.dumps({"proxy": proxy}).encode())


def test_plain_mitmdump_with_the_script_serves_the_configured_port(tmp_path):
    port = free_port()
    _write_config(tmp_path, port=port)
    env = {**os.environ, "SWITCHYARD_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [str(BIN / "mitmdump"), "-s", str(TOP / "addons" / "router.py")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.1)
        else:
            pytest.fail("the gateway did not listen on the configured port")
        assert response.json()["status"] == "ok"
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert f"Switchyard gateway listening at http://127.0.0.1:{port}" in output  # loopback only, as configured


@pytest.mark.parametrize(
    ("proxy", "needle"),
    [
        ({"allow_lan_access": True, "auth_mode": "off"}, "allow_lan_access"),
        ({"port": 99999}, "proxy.port"),
        ({"auth_mode": "strict", "api_key": ""}, "api_key"),
        ({"cors_origins": ["localhost:5173"]}, "proxy.cors_origins"),
    ],
)
@pytest.mark.parametrize("launcher", ["switchyard", "mitmdump"])
def test_bad_settings_are_refused_with_a_clear_message(tmp_path, proxy, needle, launcher):
    _write_config(tmp_path, **proxy)
    env = {**os.environ, "SWITCHYARD_HOME": str(tmp_path)}
    argv = (
        [str(BIN / "switchyard"), "run"]
        if launcher == "switchyard"
        else [str(BIN / "mitmdump"), "--mode", f"reverse:http://127.0.0.1:1@127.0.0.1:{free_port()}", "-s", str(TOP / "addons" / "router.py")]
    )
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert needle in output
    assert "Traceback" not in output


# --- client keys ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(sim, tmp_path_factory):
    gateway = prepare_gateway(sim, tmp_path_factory.mktemp("strict"))
    gateway.add_google()
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"authorization": f"Bearer {API_KEY}"}, ""),
        ({"authorization": API_KEY}, ""),
        ({"x-api-key": API_KEY}, ""),
        ({"x-goog-api-key": API_KEY}, ""),
        ({}, f"?key={API_KEY}"),
    ],
)
def test_every_key_form_is_accepted(strict, headers, query):
    response = httpx.post(f"{strict.url}/v1/chat/completions{query}", json=CHAT, headers=headers, timeout=10)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        ("/v1/chat/completions", CHAT, lambda j: j["error"]["type"] == "authentication_error"),
        ("/v1/messages", {"model": MODEL, "max_tokens": 5, "messages": []}, lambda j: j["type"] == "error" and j["error"]["type"] == "authentication_error"),
        (f"/v1beta/models/{MODEL}:generateContent", {"contents": []}, lambda j: j["error"]["status"] == "UNAUTHENTICATED"),
    ],
)
def test_wrong_key_gets_401_in_the_callers_protocol(strict, path, body, shape):
    for headers in ({}, {"authorization": "Bearer sk-nope"}, {"x-api-key": "nope"}):
        response = httpx.post(f"{strict.url}{path}", json=body, headers=headers, timeout=10)
        assert response.status_code == 401
        assert shape(response.json()), response.text
        assert "nope" not in response.text


def test_strict_mode_guards_health_too(strict):
    assert httpx.get(f"{strict.url}/healthz").status_code == 401
    assert httpx.get(f"{strict.url}/healthz", headers={"x-api-key": API_KEY}).status_code == 200


def test_all_except_health_and_off(make_gateway):
    guarded = make_gateway({"proxy": {"auth_mode": "all_except_health"}})
    assert httpx.get(f"{guarded.url}/healthz").status_code == 200
    assert httpx.get(f"{guarded.url}/v1/models").status_code == 401
    assert httpx.get(f"{guarded.url}/v1/models", headers=guarded.auth()).status_code == 200
    open_gateway = make_gateway({"proxy": {"auth_mode": "auto"}})  # auto on loopback = off
    assert httpx.get(f"{open_gateway.url}/v1/models").status_code == 200


# --- the accounts store ---------------------------------------------------------------------------


def test_accounts_file_is_private_and_whole(make_gateway):
    gateway = make_gateway(start=False)
    for _ in range(5):
        gateway.add_google()
    accounts_file = gateway.home / "data" / "accounts.json"
    assert stat.S_IMODE(accounts_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(accounts_file.parent.stat().st_mode) == 0o700
    assert len(json.loads(accounts_file.read_text())["accounts"]) == 5
    assert not [p for p in accounts_file.parent.iterdir() if p.name.endswith(".tmp")]
    listed = gateway.cli("accounts", "list", "--json").stdout
    for account in json.loads(accounts_file.read_text())["accounts"]:
        assert account["secret"] not in listed


def test_cli_changes_reach_a_running_gateway(make_gateway, sim):
    gateway = make_gateway()
    client = gateway.openai()
    with pytest.raises(Exception):
        client.chat.completions.create(**CHAT)  # no accounts yet

    def served_by() -> str | None:
        try:
            return client.chat.completions.with_raw_response.create(**CHAT).headers["x-switchyard-account"]
        except openai.APIStatusError:
            return None  # the gateway has not seen the change yet

    def soon(account: str | None) -> None:
        deadline = time.monotonic() + 10
        while (got := served_by()) != account:
            assert time.monotonic() < deadline, f"still served by {got}, not {account}"
            time.sleep(0.05)

    first = gateway.add_google(email="live-a@example.com")
    soon(first)
    gateway.cli("accounts", "disable", first)
    second = gateway.add_google(email="live-b@example.com")  # seen with it: first is disabled
    soon(second)
    assert [served_by() for _ in range(3)] == [second] * 3
    gateway.cli("accounts", "remove", second)
    gateway.cli("accounts", "enable", first)
    soon(first)


def test_import_formats(make_gateway, tmp_path):
    gateway = make_gateway(start=False)
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"accounts": [{"email": "x@example.com", "refresh_token": "1//x"}, {"email": "y@example.com", "refresh_token": "1//y"}]}))
    lines = tmp_path / "tokens.txt"
    lines.write_text("1//y\n\n# a comment\n1//z\n")
    assert "imported 2" in gateway.cli("accounts", "import", str(export)).stdout
    assert "imported 1" in gateway.cli("accounts", "import", str(lines)).stdout
    emails = sorted(a["email"] or "-" for a in gateway.accounts())
    assert emails == ["-", "x@example.com", "y@example.com"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"accounts": [{"email": "no-token"}]}')
    result = gateway.cli("accounts", "import", str(bad), check=False)
    assert result.returncode == 1 and "refresh_token" in result.stderr and "Traceback" not in result.stderr
