"""Loads Switchyard's config once and makes plain `mitmdump -s addons/router.py` a gateway."""

from __future__ import annotations

import logging

from mitmproxy import ctx

from pool import config as config_file
from pool.config import Config, ConfigError, reverse_mode
from pool.paths import Home, home

log = logging.getLogger("switchyard")


class Settings:
    """The other addons read `config` and `home` from here; a bad config stops the start."""

    def __init__(self) -> None:
        self.home: Home = home()
        self.config: Config | None = None

    def load(self, loader) -> None:
        try:
            config = config_file.load(self.home.config_file)
            config_file.check_startable(config)
        except ConfigError as e:
            # An error logged during start-up makes mitmproxy exit with status 1.
            log.error("switchyard cannot start: %s", e)
            return
        self.config = config

    def running(self) -> None:
        if self.config is None:
            return
        options = ctx.options
        updates: dict[str, object] = {}
        if list(options.mode) == ["regular"]:
            updates["mode"] = [reverse_mode(self.config)]
        if options.connection_strategy == "eager":
            # With eager connections a dead reverse target would close every client connection.
            updates["connection_strategy"] = "lazy"
        if updates:
            options.update(**updates)
