"""Outbound proxies: `[network] proxy`, an account's `--proxy`, the environment, NO_PROXY — every
upstream call (OAuth, Cloud Code housekeeping, generation) through a local HTTP proxy or SOCKS5
proxy started here, and a dead proxy reported by name with its credentials masked."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from proxies import HttpProxy, Socks5Proxy, dead_port

from pool.transport import DIRECT, Transport, TransportError, check_proxy, mask_proxy

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def clean_env(monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


@pytest.fixture
def http_proxy():
    proxy = HttpProxy(user="alice", password="s3cret-http").start()
    yield proxy
    proxy.stop()


@pytest.fixture
def socks_proxy():
    proxy = Socks5Proxy(user="bob", password="s3cret-socks").start()
    yield proxy
    proxy.stop()


def test_proxy_settings_are_checked_and_shown_masked():
    assert check_proxy("socks5://u:p@127.0.0.1:1080") == "socks5://u:p@127.0.0.1:1080"
    assert check_proxy(DIRECT) == DIRECT
    for bad in ("ftp://h:1", "http://h", "socks5://h:1/path", "127.0.0.1:3128"):
        with pytest.raises(ValueError):
            check_proxy(bad)
    with pytest.raises(ValueError) as caught:
        check_proxy("gopher://user:hunter2@h:1")
    assert "hunter2" not in str(caught.value)
    assert mask_proxy("http://user:hunter2@proxy.lan:3128") == "http://***@proxy.lan:3128"
    assert mask_proxy("socks5://127.0.0.1:1080") == "socks5://127.0.0.1:1080"


def test_the_route_is_the_accounts_then_the_configs_then_the_environments_and_no_proxy_wins(clean_env):
    clean_env.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    clean_env.setenv("NO_PROXY", "localhost,.internal.example")
    plain = Transport()
    assert plain.proxy_for("https://cloudcode-pa.googleapis.com/v1internal") == "http://env-proxy:3128"
    assert plain.proxy_for("http://cloudcode-pa.googleapis.com/") is None  # no HTTP_PROXY for http://
    configured = Transport(proxy="socks5://cfg:1080")
    assert configured.proxy_for("https://cloudcode-pa.googleapis.com/") == "socks5://cfg:1080"
    assert configured.via("http://acct:8080").proxy_for("https://x.example/") == "http://acct:8080"
    assert configured.via(None).proxy_for("https://x.example/") == "socks5://cfg:1080"
    assert configured.via(DIRECT).proxy_for("https://x.example/") is None
    for transport in (plain, configured, configured.via("http://acct:8080")):
        assert transport.proxy_for("https://api.internal.example/v1") is None
        assert transport.proxy_for("http://localhost:11434/v1") is None


async def test_requests_go_through_each_kind_of_proxy(clean_env, sim, http_proxy, socks_proxy):
    target = f"{sim.url}/_sim/health"
    async with Transport(proxy=http_proxy.url("http")) as transport:
        response, _ = await transport.fetch("GET", target)
        assert response.status_code == 200
        assert http_proxy.seen == [f"GET {target}"]
        response, _ = await transport.via(socks_proxy.url("socks5")).fetch("GET", target)
        assert response.status_code == 200
        assert socks_proxy.seen == [f"127.0.0.1:{sim.port}"] and len(http_proxy.seen) == 1
        response, _ = await transport.via(socks_proxy.url("socks5h")).fetch("GET", target)
        assert response.status_code == 200 and len(socks_proxy.seen) == 2
    clean_env.setenv("ALL_PROXY", socks_proxy.url("socks5"))
    async with Transport() as transport:  # neither set: the environment's
        response, _ = await transport.fetch("GET", target)
        assert response.status_code == 200 and len(socks_proxy.seen) == 3
    clean_env.setenv("NO_PROXY", "127.0.0.1")
    async with Transport(proxy=http_proxy.url("http")) as transport:
        response, _ = await transport.fetch("GET", target)
        assert response.status_code == 200 and len(http_proxy.seen) == 1 and len(socks_proxy.seen) == 3


async def test_a_failing_proxy_is_named_with_its_credentials_masked(clean_env, sim, socks_proxy):
    dead = f"http://carol:hunter2@127.0.0.1:{dead_port()}"
    async with Transport(proxy=dead) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.fetch("GET", f"{sim.url}/_sim/health", timeout=5)
    message = str(caught.value)
    assert mask_proxy(dead) in message and "hunter2" not in message and "carol" not in message
    wrong = f"socks5://bob:wrong-password@127.0.0.1:{socks_proxy.port}"
    async with Transport(proxy=wrong) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.fetch("GET", f"{sim.url}/_sim/health", timeout=5)
    assert f"socks5://***@127.0.0.1:{socks_proxy.port}" in str(caught.value) and "wrong-password" not in str(caught.value)
    assert socks_proxy.refused == 1


def http_paths(proxy: HttpProxy) -> list[str]:
    return [line.split(" ", 1)[1] for line in proxy.seen]


@pytest.mark.parametrize("kinds", [("http", "socks5"), ("socks5", "http")], ids=["global-http-account-socks", "global-socks-account-http"])
def test_upstream_traffic_goes_through_the_proxies_per_account_and_globally(kinds, make_gateway, sim, http_proxy, socks_proxy):
    proxies = {"http": http_proxy, "socks5": socks_proxy}
    everyone, own = proxies[kinds[0]], proxies[kinds[1]]
    gateway = make_gateway({"network": {"proxy": everyone.url(kinds[0])}}, start=False)
    for name in PROXY_VARS:  # the gateway's route is the config's and the accounts' only
        gateway.env.pop(name, None)
        gateway.env.pop(name.upper(), None)
    google = gateway.add_google()
    key_account = gateway.add_key("gemini", "--models", "gemini-2.5-pro", "--proxy", own.url(kinds[1]))
    gateway.start()
    listed = {a["id"]: a for a in gateway.accounts()}
    assert listed[key_account]["proxy"] == f"{kinds[1]}://***@127.0.0.1:{own.port}"
    assert "s3cret" not in json.dumps(listed)

    oai = gateway.openai()
    answer = oai.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "via the gateway's proxy"}]
    )
    assert answer.headers["x-switchyard-account"] == google
    assert everyone.seen  # token, project, catalogue and generation: all through [network] proxy
    answer = oai.chat.completions.with_raw_response.create(
        model="gemini-2.5-pro", messages=[{"role": "user", "content": "via its own"}]
    )
    assert answer.headers["x-switchyard-account"] == key_account and answer.parse().choices[0].message.content == "echo: via its own"
    assert own.seen
    if kinds[0] == "http":  # an HTTP proxy sees what went through it
        paths = http_paths(http_proxy)
        for needed in ("/token", ":loadCodeAssist", ":fetchAvailableModels", ":streamGenerateContent"):
            assert any(needed in p for p in paths), (needed, paths)
        assert not any("v1beta/models/gemini-2.5-pro" in p for p in paths)  # the key account went its own way
        assert set(socks_proxy.seen) == {f"127.0.0.1:{sim.port}"}
    else:
        assert any("v1beta/models/gemini-2.5-pro:generateContent" in p for p in http_paths(http_proxy))
        assert set(socks_proxy.seen) == {f"127.0.0.1:{sim.port}"}

    # A dead proxy is a network error of that account, named (masked) in what the caller hears.
    dead = f"{kinds[1]}://bob:hunter2@127.0.0.1:{dead_port()}"
    gateway.cli("accounts", "set", key_account, "--proxy", dead)
    deadline = time.monotonic() + 10
    while True:  # a running gateway picks the change up within a second
        refused = httpx.post(
            f"{gateway.url}/v1/chat/completions", headers=gateway.auth(), timeout=30,
            json={"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}]},
        )
        if refused.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert refused.status_code == 502, refused.text
    message = refused.json()["error"]["message"]
    assert mask_proxy(dead) in message and "hunter2" not in message and "cannot reach the upstream" in message
    error = {a["id"]: a for a in gateway.accounts()}[key_account]["last_error"]
    assert error["error_class"] == "network" and mask_proxy(dead) in error["message"]
    assert "hunter2" not in gateway.log() and "s3cret" not in gateway.log()
    # "" gives the account back to the gateway's route.
    gateway.cli("accounts", "set", key_account, "--proxy", "")
    assert {a["id"]: a for a in gateway.accounts()}[key_account]["proxy"] is None
