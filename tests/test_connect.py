"""`switchyard connect`: each client's configuration, printed or merged into its own files with a
backup, the user's other settings kept. (tests/test_real_clients.py runs the real CLIs with what
`connect --write` wrote.)"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import stat
import tomllib

import pytest

from pool import connect
from pool.paths import Home

KEY = "sk-sy-" + "ab" * 20
GW = connect.Gateway(
    url="http://127.0.0.1:8045", key=KEY, models=["claude-sonnet-4-6", "gemini-2.5-flash", "gemini-3.1-pro-high"],
    resolve=lambda name: {"gemini-2.5-pro": "gemini-3.1-pro-high", "gpt-5-codex": "gemini-3.1-pro-high"}.get(name, name),
)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "GEMINI_CLI_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def written(setup: connect.Setup) -> list[tuple[str, str | None]]:
    return [(str(path), backup.name if backup else None) for path, backup in connect.write(setup, now=1_800_000_000)]


def test_claude_code_gets_an_env_block_merged_into_its_settings(home):
    path = home / ".claude" / "settings.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"theme": "dark", "env": {"DISABLE_TELEMETRY": "1", "ANTHROPIC_BASE_URL": "http://old"}}))
    done = written(connect.claude_code(GW))
    assert done[0][0] == str(path) and done[0][1].startswith("settings.json.bak-")
    settings = json.loads(path.read_text())
    assert settings["theme"] == "dark"
    assert settings["env"] == {
        "DISABLE_TELEMETRY": "1", "ANTHROPIC_BASE_URL": "http://127.0.0.1:8045", "ANTHROPIC_AUTH_TOKEN": KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    assert json.loads((path.parent / done[0][1]).read_text())["env"]["ANTHROPIC_BASE_URL"] == "http://old"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # With a background model the side requests stay on: they are cheap there.
    with_background = connect.Gateway(url=GW.url, key=GW.key, models=GW.models, resolve=GW.resolve, background=True)
    assert "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC" not in connect.claude_code(with_background).text


def test_codex_gets_a_provider_and_keeps_the_users_model_and_settings(home, monkeypatch):
    path = home / ".codex" / "config.toml"
    path.parent.mkdir()
    path.write_text('model = "o3"\napproval_policy = "never"\n\n[model_providers.other]\nname = "Other"\nbase_url = "http://x"\n')
    written(connect.codex(GW))
    config = tomllib.loads(path.read_text())
    assert config["model"] == "o3" and config["approval_policy"] == "never" and config["model_provider"] == "switchyard"
    assert config["model_providers"]["other"]["name"] == "Other"
    assert config["model_providers"]["switchyard"] == {
        "name": "Switchyard", "base_url": "http://127.0.0.1:8045/v1", "wire_api": "responses",
        "http_headers": {"Authorization": f"Bearer {KEY}"},
    }
    fresh = home / "fresh"
    monkeypatch.setenv("CODEX_HOME", str(fresh))
    written(connect.codex(GW))
    assert tomllib.loads((fresh / "config.toml").read_text())["model"] == "gpt-5-codex"


def test_gemini_cli_gets_its_auth_type_a_model_and_a_dotenv(home):
    folder = home / ".gemini"
    folder.mkdir()
    (folder / "settings.json").write_text(json.dumps({"ui": {"theme": "x"}, "security": {"folderTrust": {"enabled": True}}}))
    (folder / ".env").write_text("# mine\nGOOGLE_CLOUD_PROJECT=p1\nGEMINI_API_KEY=old\n")
    done = written(connect.gemini_cli(GW))
    assert [path for path, _ in done] == [str(folder / "settings.json"), str(folder / ".env")]
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["ui"] == {"theme": "x"} and settings["security"]["folderTrust"] == {"enabled": True}
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert settings["model"]["name"] == "gemini-3.1-pro-high"  # Gemini CLI's own default, as the pool serves it
    assert (folder / ".env").read_text() == (
        f"# mine\nGOOGLE_CLOUD_PROJECT=p1\nGEMINI_API_KEY={KEY}\nGOOGLE_GEMINI_BASE_URL=http://127.0.0.1:8045\n"
    )


def test_opencode_gets_a_provider_with_the_pools_models_and_a_bad_file_is_left_alone(home):
    path = home / ".config" / "opencode" / "opencode.json"
    written(connect.opencode(GW))
    config = json.loads(path.read_text())
    provider = config["provider"]["switchyard"]
    assert provider["options"] == {"baseURL": "http://127.0.0.1:8045/v1", "apiKey": KEY}
    assert set(provider["models"]) == set(GW.models) and config["model"] == "switchyard/gemini-3.1-pro-high"
    path.write_text('{\n  // my comment\n  "theme": "x"\n}\n')
    with pytest.raises(connect.ConnectError, match="not plain JSON"):
        written(connect.opencode(GW))
    assert "// my comment" in path.read_text()


def test_printing_needs_no_files_and_env_has_none_to_write(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    where = Home(config_dir=tmp_path, data_dir=tmp_path / "data")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        connect.cmd_connect(argparse.Namespace(client="env", key=KEY, url=None, write=False), where)
    text = out.getvalue()
    assert f"export OPENAI_BASE_URL=http://127.0.0.1:8045/v1\nexport OPENAI_API_KEY={KEY}" in text
    assert "export GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:8045" in text
    with pytest.raises(connect.ConnectError, match="no config file"):
        connect.cmd_connect(argparse.Namespace(client="env", key=KEY, url=None, write=True), where)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        connect.cmd_connect(argparse.Namespace(client="codex", key=None, url="http://desk.lan:9000", write=False), where)
    admin = json.dumps(tomllib.loads((tmp_path / "config.toml").read_text())["proxy"]["api_key"])[1:-1]
    assert 'base_url = "http://desk.lan:9000/v1"' in out.getvalue() and admin in out.getvalue()
    assert not (tmp_path / "home").exists()
