"""Test parts for the simulated upstream's own tests (tests/test_simupstream.py, test_sim_*.py):
one sim per module, reset before each test, with an onboarded Google account and one key of
every kind, and helpers that speak to it with plain httpx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"

from simupstream import SimUpstream, client_headers  # noqa: E402  (conftest put scripts/ on sys.path)

GOOGLE_KEY = "gemini-test-key-000"
OPENAI_KEY = "sk-openai-test-000"
ANTHROPIC_KEY = "sk-ant-test-000"
ANTHROPIC_HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
WEATHER_GEMINI = [{"functionDeclarations": [{"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}]}]
CALL_TEXT = 'weather please [[call get_weather {"city":"Paris"}]]'


@pytest.fixture(scope="module")
def server() -> Iterator[SimUpstream]:
    sim = SimUpstream()
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: SimUpstream) -> SimUpstream:
    server.reset()
    server.add_google_account("rt-alice", "alice@example.com", "proj-1")
    server.add_api_key(GOOGLE_KEY, "gemini")
    server.add_api_key(OPENAI_KEY, "openai")
    server.add_api_key(ANTHROPIC_KEY, "anthropic")
    return server


@pytest.fixture
def client(sim: SimUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=5) as c:
        yield c


def refresh(client: httpx.Client, token: str = "rt-alice", **extra: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "client_id": "sim-client-id", "client_secret": "sim-client-secret",
            "refresh_token": token, **extra}
    return client.post("/token", data=form)


def bearer(client: httpx.Client, token: str = "rt-alice") -> dict[str, str]:
    """An access token for the account, with the client identity Cloud Code expects."""
    return {"authorization": "Bearer " + refresh(client, token).json()["access_token"], **client_headers()}


def envelope(contents: list[dict[str, Any]], model: str = "gemini-2.5-flash", project: str = "proj-1",
             **request: Any) -> dict[str, Any]:
    return {"project": project, "model": model, "userAgent": "antigravity", "requestType": "agent",
            "requestId": "req-1", "request": {"contents": contents, **request}}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def sse_data(text: str) -> list[Any]:
    """The JSON of every `data:` line; a missing blank-line terminator fails the parse."""
    assert text.endswith(("\n\n", "\r\n\r\n")), "stream must end on an event boundary"
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


def anthropic_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            name, data = block.split("\n")
            assert name.startswith("event: ") and data.startswith("data: ")
            payload = json.loads(data[6:])
            assert payload["type"] == name[7:]
            events.append((name[7:], payload))
    return events


def gemini_text(docs: list[dict[str, Any]]) -> str:
    return "".join(p.get("text", "") for d in docs for p in d["candidates"][0]["content"]["parts"]
                   if not p.get("thought"))


def google_error(r: httpx.Response, status: int, rpc: str) -> dict[str, Any]:
    """The Google RPC error of a refusal, checked for its shape: code, message, status."""
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["status"] == rpc and isinstance(err["message"], str), err
    return err
