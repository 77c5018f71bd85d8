"""Background requests: each rule against the real capture it was written from, the clients' main
requests against every rule, and a real gateway that sends a captured title request to
`background_model` and its main request to the model the user picked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_observability import ledger_rows

from addons import background
from addons.translate import registry

CLIENTS = Path(__file__).resolve().parent / "fixtures" / "clients"
SIDE_CAPTURES = ("side-requests/claude-code-2.1.197.json", "side-requests/claude-code-2.0.50.json")
CHEAP = "gemini-3-flash"


def captures() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name in SIDE_CAPTURES:
        for capture in json.loads((CLIENTS / name).read_text())["requests"]:
            found.append((f"{name}#{capture['name']}", capture))
    return found


def capture(ref: str) -> dict[str, Any]:
    return dict(captures())[ref]


def decode(capture: dict[str, Any]):
    return registry.CALLERS["anthropic"].decode_request(capture["body"])


@pytest.mark.parametrize("rule", background.RULES, ids=lambda r: r.name)
def test_each_rule_has_its_capture_and_recognises_it(rule):
    found = background.recognise(decode(capture(rule.capture)))
    assert found is not None and found.name == rule.name


@pytest.mark.parametrize(("ref", "capture"), captures(), ids=[ref for ref, _ in captures()])
def test_every_capture_is_what_it_says(ref, capture):
    """Side requests match their rule (titles on every prompt too); main requests match none."""
    found = background.recognise(decode(capture))
    assert (found.name if found else None) == capture["rule"], ref


def test_main_requests_of_every_client_match_no_rule():
    first = json.loads((CLIENTS / "claude-code-2.1.197-messages.json").read_text())
    assert background.recognise(registry.CALLERS["anthropic"].decode_request(first["body"])) is None
    codex = json.loads((CLIENTS / "codex-0.169-responses.json").read_text())
    assert background.recognise(registry.CALLERS["openai_responses"].decode_request(codex["body"])) is None
    gemini = json.loads((CLIENTS / "gemini-cli-0.61-streamGenerateContent.json").read_text())
    request = registry.CALLERS["gemini"].decode_request(gemini["body"], model="gemini-2.5-flash")
    assert background.recognise(request) is None


def send(gateway, capture: dict[str, Any]) -> tuple[httpx.Response, str]:
    """The captured request as Claude Code sent it (its headers, the gateway's key): the answer's
    headers and its streamed text."""
    headers = {
        k: v for k, v in capture["headers"].items()
        if k.lower() not in ("authorization", "x-api-key", "host", "content-length", "accept-encoding", "connection")
    }
    headers["x-api-key"] = gateway.api_key
    with httpx.stream("POST", gateway.url + capture["path"], headers=headers, json=capture["body"], timeout=30) as answer:
        text = "".join(
            json.loads(line[6:])["delta"].get("text", "")
            for line in answer.iter_lines() if line.startswith("data: ") and '"content_block_delta"' in line
        )
    return answer, text


def test_a_captured_title_request_goes_to_the_background_model_and_its_main_request_does_not(make_gateway, sim):
    gateway = make_gateway({"routing": {"background_model": CHEAP}}, start=False)
    gateway.add_google()
    gateway.start()
    title, _ = send(gateway, capture("side-requests/claude-code-2.1.197.json#title"))
    assert title.status_code == 200
    assert title.headers["x-switchyard-model"] == CHEAP and title.headers["x-switchyard-background"] == "title"
    main, text = send(gateway, capture("side-requests/claude-code-2.1.197.json#main"))
    assert main.status_code == 200 and text.startswith("echo:")
    assert main.headers["x-switchyard-model"] == "claude-opus-4-6-thinking"  # claude-opus-4-8, as the pool serves it
    assert "x-switchyard-background" not in main.headers
    probe, _ = send(gateway, capture("side-requests/claude-code-2.1.197.json#quota_probe"))
    assert probe.headers["x-switchyard-model"] == CHEAP and probe.headers["x-switchyard-background"] == "quota_probe"
    rows = ledger_rows(gateway, expect=3)
    assert [(r["requested_model"], r["model"], r["background"]) for r in rows] == [
        ("claude-opus-4-8", CHEAP, "title"),
        ("claude-opus-4-8", "claude-opus-4-6-thinking", None),
        ("claude-opus-4-8[1m]", CHEAP, "quota_probe"),
    ]
    assert "[background: title]" in gateway.log()
    report = json.loads(gateway.cli("stats", "--json").stdout)
    assert report["totals"]["background"] == 2


def test_background_routing_is_off_by_default(make_gateway, sim):
    gateway = make_gateway(start=False)
    gateway.add_google()
    gateway.start()
    title, _ = send(gateway, capture("side-requests/claude-code-2.1.197.json#title"))
    assert title.headers["x-switchyard-model"] == "claude-opus-4-6-thinking"
    assert "x-switchyard-background" not in title.headers


def test_readme_carries_the_rule_table_from_the_code():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert background.rule_table() in readme
