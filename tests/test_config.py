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
    assert data["routing"] == {"scheduling": "balance", "sticky_ttl": 3600, "max_attempts": 3}
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
