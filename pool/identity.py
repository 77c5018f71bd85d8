"""Who the gateway says it is to Google's Cloud Code service.

Cloud Code serves only clients it recognises: every v1internal call carries the Antigravity
IDE's User-Agent and its companion headers, as the IDE itself sends them. The version is the
user's to raise (`[upstreams.antigravity] client_version`) when Google stops accepting it.
"""

from __future__ import annotations

import sys

from .config import AntigravityUpstream

# sys.platform -> the platform part of the IDE's User-Agent (an Electron app's Chrome string).
PLATFORMS: dict[str, str] = {
    "darwin": "Macintosh; Intel Mac OS X 10_15_7",
    "win32": "Windows NT 10.0; Win64; x64",
    "linux": "X11; Linux x86_64",
}
CHROME = "132.0.6834.160"
ELECTRON = "39.2.3"


def platform(upstream: AntigravityUpstream) -> str:
    return upstream.platform or PLATFORMS.get(sys.platform, PLATFORMS["linux"])


def user_agent(upstream: AntigravityUpstream) -> str:
    return f"Antigravity/{upstream.client_version} ({platform(upstream)}) Chrome/{CHROME} Electron/{ELECTRON}"


def headers(upstream: AntigravityUpstream) -> dict[str, str]:
    """The headers that name the client on every v1internal call."""
    return {
        "user-agent": user_agent(upstream),
        "x-client-name": "antigravity",
        "x-client-version": upstream.client_version,
    }
