"""Web search: which model does the searching, and what the request is called upstream.

Every protocol's search tool decodes into `c.Request.search`; a `-online` model name asks for it
too. Google grounds Gemini models in Google Search (Cloud Code and Gemini keys), Anthropic keys
run their own web_search tool, OpenAI keys search with their search models. When the model a
request routes to cannot search on any account that serves it (Claude or GPT-OSS behind Cloud
Code), the newest Gemini Flash the pool serves does the searching instead. Function tools win
over search where an upstream cannot take both (Google): the request then goes without search.
"""

from __future__ import annotations

from pool import models
from pool.accounts import Account
from pool.pool import Pool
from pool.upstreams import Operation

from .translate import canonical as c

ONLINE = "-online"  # Antigravity-Manager's model-name suffix for "search the web"
SEARCH_FAMILY = "gemini-flash"  # who searches for models that cannot


def online(request: c.Request) -> None:
    if request.model.endswith(ONLINE):
        request.model = request.model.removesuffix(ONLINE)
        request.search = request.search or c.WebSearch()


def wanted(request: c.Request) -> bool:
    """Search is asked for and the upstream need not choose between it and function tools."""
    return request.search is not None and not request.tools


def operation(request: c.Request) -> Operation:
    return "search" if wanted(request) else "generate"


def can_search(account: Account, model: str) -> bool:
    match account.kind:
        case "anthropic":
            return True
        case "openai":
            return "search" in model
        case _:
            return model.startswith("gemini-") and models.kind(model) == "text"


def searching_model(pool: Pool, request: c.Request, model: str) -> str:
    """`model`, or the model that searches in its stead."""
    if not wanted(request):
        return model
    if any(pool.serves(account, model) and can_search(account, model) for account in pool.accounts):
        return model
    stand_in = pool.resolve(SEARCH_FAMILY)
    return stand_in if pool.served(stand_in) else model
