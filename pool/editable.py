"""The settings the dashboard edits: which keys, whether a running gateway applies them at once,
and the edit itself — the same validation as the file, written atomically under the config's
lock, nothing written when any value is bad."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import config as config_file
from .accounts import mask
from .config import Config, ConfigError
from .urls import mask_url

LIVE, RESTART = "live", "restart"

# dotted key -> when a running gateway follows a new value: from its next request, or after a restart
EDITABLE: dict[str, str] = {
    "routing.scheduling": LIVE,
    "routing.sticky_ttl": LIVE,
    "routing.max_attempts": LIVE,
    "quota.protect_below": LIVE,
    "quota.protect_models": LIVE,
    "quota.refresh_interval": LIVE,
    "model_mapping": LIVE,
    "proxy.request_timeout": LIVE,
    "monitor.max_flows": LIVE,
    "usage.retention_days": RESTART,
    "proxy.port": RESTART,
}
SECRETS = ("proxy.api_key", "upstreams.antigravity.client_secret")
URLS = ("usage.database_url", "cluster.redis_url")  # shown with their passwords masked


def get(data: dict[str, Any], key: str) -> Any:
    for part in key.split(".") if key else ():
        data = data[part]
    return data


def view(current: Config, applied: Config, started: Config) -> dict[str, Any]:
    """The config file with its secrets masked, and the editable keys: their values, when they
    apply, and whether one is not in force yet (a restart key changed since the start, or a
    file edited by hand)."""
    values = _masked(current)
    running = {LIVE: applied.model_dump(mode="json"), RESTART: started.model_dump(mode="json")}
    fields = {
        key: {"value": get(values, key), "applies": applies, "pending": get(values, key) != get(running[applies], key)}
        for key, applies in EDITABLE.items()
    }
    return {"values": values, "fields": fields}


def apply(running: Config, saved: Config) -> Config:
    """What a running gateway follows after a save: the live keys from the saved file, all the
    rest as it started (the file may hold hand edits that wait for a restart)."""
    data = running.model_dump(mode="json")
    new = saved.model_dump(mode="json")
    for key, applies in EDITABLE.items():
        if applies == LIVE:
            *parents, last = key.split(".")
            section = get(data, ".".join(parents)) if parents else data
            section[last] = get(new, key)
    return Config.model_validate(data)


def _masked(config: Config) -> dict[str, Any]:
    values = config.model_dump(mode="json")
    for key in SECRETS:
        *parents, last = key.split(".")
        section = get(values, ".".join(parents))
        section[last] = mask(section[last])
    for key in URLS:
        *parents, last = key.split(".")
        section = get(values, ".".join(parents))
        section[last] = mask_url(section[last])
    return values


def edit(path: Path, changes: dict[str, Any]) -> Config:
    """Writes the changes (dotted key -> value; None: back to the default) into config.toml. Any
    key not editable here, or any value the file would refuse, raises ConfigError with `fields`
    naming each, and nothing is written."""
    if not isinstance(changes, dict) or not changes:
        raise ConfigError("nothing to change: send {\"routing.max_attempts\": 5, ...}")
    refused = {key: "not editable here: edit config.toml" for key in changes if key not in EDITABLE}
    if refused:
        raise ConfigError("; ".join(f"{k}: {v}" for k, v in refused.items()), refused)

    def change(data: dict[str, Any]) -> None:
        for key, value in changes.items():
            *parents, last = key.split(".")
            section = data
            for part in parents:
                section = section.setdefault(part, {})
                if not isinstance(section, dict):
                    raise ConfigError(f"{part}: not a table in config.toml", {key: f"{part} is not a table in config.toml"})
            if value is None:
                section.pop(last, None)
            else:
                section[last] = value
        config_file.check_startable(config_file.parse(data))

    return config_file.update(path, change)
