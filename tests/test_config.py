"""config.toml: created with defaults, validated with messages that name the key."""

from __future__ import annotations

import os
import stat
import tomllib

import pytest

from pool import config as cfg


def test_missing_file_is_created_with_defaults_and_a_key(tmp_path):
    path = tmp_path / "config.toml"
    config = cfg.load(path)
    assert path.exists()
    data = tomllib.loads(path.read_text())
    assert data["proxy"]["port"] == 8045
    assert data["proxy"]["allow_lan_access"] is False
    assert data["proxy"]["auth_mode"] == "auto"
    assert data["routing"] == {"scheduling": "balance", "sticky_ttl": 3600, "max_attempts": 3, "background_model": ""}
    assert data["upstreams"]["antigravity"]["token_url"] == "https://oauth2.googleapis.com/token"
    assert config.proxy.api_key.startswith("sk-") and len(config.proxy.api_key) == 35
    int(config.proxy.api_key[3:], 16)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert cfg.load(path).proxy.api_key == config.proxy.api_key  # stable on the next start


def test_a_config_others_could_read_is_made_private(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[proxy]\napi_key = "sk-mine"\n')
    path.chmod(0o644)  # as an editor leaves it: the admin key readable by every user
    assert cfg.load(path).proxy.api_key == "sk-mine"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[proxy]\nport = 70000\n", "proxy.port"),
        ("[proxy]\nalow_lan_access = true\n", "proxy.alow_lan_access: unknown key"),
        ('[proxy]\nauth_mode = "sometimes"\n', "proxy.auth_mode"),
        ('[routing]\nscheduling = "random"\n', "routing.scheduling"),
        ("[routing]\nmax_attempts = 0\n", "routing.max_attempts"),
        ('[upstreams.antigravity]\nendpoints = ["ftp://x"]\n', "upstreams.antigravity.endpoints"),
        ("[proxy\nport = 1\n", "not valid TOML"),
        ("[model_mapping]\n\"gpt-4o\" = 5\n", "model_mapping.gpt-4o"),
        ('[proxy]\nallowed_hosts = ["http://box.lan"]\n', "proxy.allowed_hosts: 'http://box.lan' is not a host name"),
        ('[proxy]\nallowed_hosts = ["box.lan:99999"]\n', "proxy.allowed_hosts"),
        ('[proxy]\nallowed_hosts = "box.lan"\n', "proxy.allowed_hosts"),
        ('[proxy]\ncors_origins = ["http://localhost:5173/"]\n', "proxy.cors_origins: 'http://localhost:5173/' is not an origin"),
        ('[proxy]\ncors_origins = ["*"]\n', "proxy.cors_origins"),
        ("[proxy]\nmax_body_mb = 0\n", "proxy.max_body_mb"),
        ("[proxy]\nmax_header_kb = 0\n", "proxy.max_header_kb"),
        ("[proxy]\nmax_connections = 0\n", "proxy.max_connections"),
        ("[proxy]\nclient_timeout = -1\n", "proxy.client_timeout"),
        ('[proxy]\nkeepalive_timeout = "long"\n', "proxy.keepalive_timeout"),
    ],
)
def test_bad_files_name_the_key(tmp_path, text, needle):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load(path)
    assert needle in str(caught.value)
    assert str(path) in str(caught.value)


def test_auto_auth_follows_lan_access():
    assert cfg.parse({}).proxy.effective_auth_mode == "off"
    lan = cfg.parse({"proxy": {"allow_lan_access": True, "api_key": "sk-x"}})
    assert lan.proxy.effective_auth_mode == "all_except_health"
    assert lan.proxy.listen_host == "0.0.0.0"
    cfg.check_startable(lan)


def test_lan_without_auth_is_refused():
    config = cfg.parse({"proxy": {"allow_lan_access": True, "auth_mode": "off"}})
    with pytest.raises(cfg.ConfigError, match="allow_lan_access"):
        cfg.check_startable(config)


def test_auth_without_key_is_refused():
    config = cfg.parse({"proxy": {"auth_mode": "strict", "api_key": ""}})
    with pytest.raises(cfg.ConfigError, match="api_key"):
        cfg.check_startable(config)


def test_oauth_client_from_environment(monkeypatch):
    monkeypatch.setenv("SWITCHYARD_GOOGLE_CLIENT_ID", "env-id")
    monkeypatch.setenv("SWITCHYARD_GOOGLE_CLIENT_SECRET", "env-secret")
    assert cfg.parse({}).upstreams.antigravity.oauth_client == ("env-id", "env-secret")
    config = cfg.parse({"upstreams": {"antigravity": {"client_id": "file-id", "client_secret": "file-secret"}}})
    assert config.upstreams.antigravity.oauth_client == ("file-id", "file-secret")


def test_host_and_origin_lists_are_kept_lower_case():
    proxy = cfg.parse({"proxy": {"allowed_hosts": ["Box.LAN:8045", "[::1]"], "cors_origins": ["HTTPS://App.Example.com:8443"]}}).proxy
    assert proxy.allowed_hosts == ["box.lan:8045", "[::1]"]
    assert proxy.cors_origins == ["https://app.example.com:8443"]
    assert proxy.max_body == 64 * 1024 * 1024  # the default fits large image prompts


def test_the_two_waits_fit_inside_request_timeout(tmp_path):
    proxy = cfg.parse({}).proxy
    assert (proxy.request_timeout, proxy.first_byte_timeout, proxy.idle_timeout) == (600, 60, 60)
    assert tomllib.loads(cfg.load(tmp_path / "config.toml").to_toml().decode())["proxy"]["idle_timeout"] == 60
    # Left out, they shrink with a shorter request_timeout; given, they must fit in it.
    short = cfg.parse({"proxy": {"request_timeout": 20}}).proxy
    assert (short.first_byte_timeout, short.idle_timeout) == (20, 20)
    given = cfg.parse({"proxy": {"request_timeout": 30, "first_byte_timeout": 5, "idle_timeout": 30}}).proxy
    assert (given.first_byte_timeout, given.idle_timeout) == (5, 30)
    for key, value, needle in [
        ("first_byte_timeout", 31, "proxy.first_byte_timeout: must not be above request_timeout (30 s) (got 31)"),
        ("idle_timeout", 45, "proxy.idle_timeout: must not be above request_timeout (30 s) (got 45)"),
        ("idle_timeout", 0, "proxy.idle_timeout: Input should be greater than 0"),
        ("first_byte_timeout", -1, "proxy.first_byte_timeout: Input should be greater than 0"),
    ]:
        with pytest.raises(cfg.ConfigError) as caught:
            cfg.parse({"proxy": {"request_timeout": 30, key: value, "api_key": "sk-secret-key"}})
        assert needle in str(caught.value) and "sk-secret-key" not in str(caught.value)
