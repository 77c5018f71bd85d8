"""What a key account's upstream says it serves: its own model list.

Routing stays with the account's `--models` globs (some compatible upstreams list less than
they serve); the list only tells callers' model lists which real names exist behind a glob.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .accounts import Account
from .config import Config
from .health import Verdict, classify, network_failure
from .transport import Transport, TransportError
from .upstreams import endpoints


class CatalogError(Exception):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


def _gemini(data: Any) -> list[str]:
    return [str(m["name"]).removeprefix("models/") for m in data.get("models", []) if isinstance(m, dict) and "name" in m]


def _data_ids(data: Any) -> list[str]:
    return [str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and "id" in m]


# kind -> (path after the base URL, auth headers from the key, names from the answer)
LISTS: dict[str, tuple[str, Callable[[str], dict[str, str]], Callable[[Any], list[str]]]] = {
    "gemini": ("/v1beta/models?pageSize=1000", lambda key: {"x-goog-api-key": key}, _gemini),
    "openai": ("/models", lambda key: {"authorization": f"Bearer {key}"}, _data_ids),
    "anthropic": ("/v1/models?limit=1000", lambda key: {"x-api-key": key, "anthropic-version": "2023-06-01"}, _data_ids),
}


async def list_models(transport: Transport, account: Account, config: Config) -> list[str]:
    path, auth, names = LISTS[account.kind]
    url = endpoints(account, config)[0] + path
    try:
        response, content = await transport.fetch("GET", url, headers=auth(account.secret))
    except TransportError as e:
        raise CatalogError(network_failure(e)) from None
    if response.status_code != 200:
        raise CatalogError(classify(response.status_code, response.headers, content))
    try:
        data = json.loads(content)
        return sorted(set(names(data))) if isinstance(data, dict) else []
    except (ValueError, TypeError, KeyError):
        return []
