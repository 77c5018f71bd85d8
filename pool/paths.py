"""Where Switchyard keeps its config and data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "switchyard"


@dataclass(frozen=True, slots=True)
class Home:
    config_dir: Path
    data_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def accounts_file(self) -> Path:
        return self.data_dir / "accounts.json"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "state.json"

    @property
    def keys_file(self) -> Path:
        return self.data_dir / "keys.json"

    @property
    def ledger_file(self) -> Path:
        return self.data_dir / "usage.sqlite3"


def home() -> Home:
    """`SWITCHYARD_HOME=DIR` keeps everything under DIR; otherwise the platform's usual places."""
    override = os.environ.get("SWITCHYARD_HOME")
    if override:
        root = Path(override).expanduser().resolve()
        return Home(config_dir=root, data_dir=root / "data")
    return Home(
        config_dir=Path(platformdirs.user_config_dir(APP_NAME)),
        data_dir=Path(platformdirs.user_data_dir(APP_NAME)),
    )
