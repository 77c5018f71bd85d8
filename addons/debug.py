"""`GET /_switchyard/debug`: what the gateway holds right now, for leak checks (tests, soak runs).

Not part of the API: it answers only a caller on this machine that presents the admin key (the
config's `api_key`), whatever the auth mode; to anyone else the path does not exist (the
gateway's usual 404). It reads counters the gateway keeps anyway, so asking costs nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mitmproxy import http

from pool.pool import Pool

from . import answers, direct
from .auth import hide_keys, presented_keys
from .settings import Settings

PATH = "/_switchyard/debug"
FD_DIR = Path("/proc/self/fd")
STATM = Path("/proc/self/statm")


class Debug:
    """Runs before ClientAuth (which masks the keys it reads) and checks the admin key itself."""

    def __init__(self, settings: Settings, holdings: Callable[[], dict[str, Any]]) -> None:
        self.settings = settings
        self.holdings = holdings

    def request(self, flow: http.HTTPFlow) -> None:
        config = self.settings.config
        if config is None or flow.response is not None or flow.request.path.partition("?")[0] != PATH:
            return
        if flow.request.method != "GET" or not _local(flow) or not _admin(flow.request, config.proxy.api_key):
            return  # the gateway answers as for any unknown path
        hide_keys(flow.request)
        flow.response = answers.json_response(200, {**self.holdings(), **process()})


def holdings(pool: Pool | None) -> dict[str, Any]:
    """What requests hold: account leases and answers being streamed."""
    leases = pool.leases() if pool is not None else {}
    return {
        "leases": leases,
        "leases_total": sum(leases.values()),
        "streaming": direct.streaming(),
    }


def process() -> dict[str, Any]:
    """The process: asyncio tasks, open file descriptors and resident memory (None where the
    platform does not tell)."""
    fds = rss = None
    try:
        fds = len(os.listdir(FD_DIR))
        rss = int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    return {"tasks": len(asyncio.all_tasks()), "fds": fds, "rss_bytes": rss}


def _local(flow: http.HTTPFlow) -> bool:
    try:
        address = ipaddress.ip_address(str(flow.client_conn.peername[0]).partition("%")[0])
    except (TypeError, ValueError, IndexError):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _admin(request: http.Request, api_key: str) -> bool:
    expected = api_key.encode()
    return bool(expected) and any(hmac.compare_digest(key.encode(), expected) for key in presented_keys(request))
