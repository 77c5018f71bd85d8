"""Several replicas, one pool: the store they share (`[cluster] redis_url`), opened when the
gateway runs and closed when it stops. Alone, the local store: nothing changes, nothing is
imported. Listed before the addons that use it, so it is open when their `running` comes."""

from __future__ import annotations

import asyncio
import logging

from pool.shared import Shared, open_store

from .settings import Settings

log = logging.getLogger("switchyard")


class Cluster:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Shared = Shared()

    def running(self) -> None:
        config = self.settings.config
        if config is None or self.store.name != "local":
            return
        url = config.cluster.effective_redis_url
        if url:
            self.store = open_store(url)
            self.store.start()

    def done(self) -> None:
        try:
            asyncio.get_running_loop().create_task(self.store.close())
        except RuntimeError:
            pass

    def health(self) -> dict[str, str]:
        """For /healthz: "cluster": "ok" while shared, "degraded" while Redis is away; nothing alone."""
        state = self.store.health()
        return {"cluster": state} if state is not None else {}
