"""Thinking and tools across a change of account: a conversation starts on one upstream and
goes on on another, as it does when an account is disabled, cools down or runs out of quota.

Every account serves the same model, so the account that serves a turn is the only one
enabled. Upstreams refuse what they cannot verify (Anthropic a thinking block signed by Google,
Google a call without or with a foreign signature on a model that checks them), so what the
gateway must do across the switch (drop or degrade foreign signatures, restore its own, or use
Gemini's documented placeholder) shows as a refusal here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from conftest import Gateway
from test_matrix import (
    CALL_PROMPT,
    MULTI_TURN,
    PROTOCOLS,
    RESULT,
    THOUGHT,
    Clients,
    Conversation,
    listed_models,
    new_gateway,
    wait_until,
)

# Checks thought signatures on the Google side. (The simulated Antigravity checks its "-thinking"
# Claude models by Gemini 3's rules too; the real one seems to apply Anthropic's to them.)
MODEL = "gemini-3-pro-preview"
# (where the conversation starts, where it goes on)
SWITCHES = [
    ("antigravity", "anthropic"),
    ("anthropic", "antigravity"),
    ("openai", "antigravity"),
    ("antigravity", "openai"),
]


@dataclass
class Switchboard:
    gateway: Gateway
    accounts: dict[str, str]  # dialect -> account id
    clients: Clients
    enabled: set[str] = field(default_factory=set)

    def marker(self, dialect: str) -> str:
        """A model only this account lists: the model list shows which accounts are enabled."""
        return f"marker-{dialect}"

    def serve_with(self, dialect: str) -> None:
        """Enables only this dialect's account and waits until the gateway has seen it."""
        if dialect not in self.enabled:
            self.gateway.cli("accounts", "enable", self.accounts[dialect])
        for other in self.enabled - {dialect}:
            self.gateway.cli("accounts", "disable", self.accounts[other])
        self.enabled = {dialect}
        markers = {self.marker(name) for name in self.accounts}
        wait_until(lambda: listed_models(self.gateway) & markers == {self.marker(dialect)}, f"{dialect} alone")


@pytest.fixture(scope="module")
def board(sim, tmp_path_factory) -> Iterator[Switchboard]:
    gateway = new_gateway(sim, tmp_path_factory)
    accounts = {"antigravity": gateway.add_google(models={MODEL: {}, "marker-antigravity": {}})}
    for kind in ("anthropic", "openai"):
        accounts[kind] = gateway.add_key(kind, "--models", f"{MODEL},marker-{kind}", sim_models=[MODEL])
    gateway.start()
    board = Switchboard(gateway, accounts, Clients(gateway), set(accounts))
    wait_until(lambda: board.marker("antigravity") in listed_models(gateway), "the Google account's model list")
    yield board
    board.clients.close()
    gateway.stop()


@pytest.mark.parametrize(("before", "after"), SWITCHES, ids=[f"{a}-to-{b}" for a, b in SWITCHES])
def test_thinking_and_tools_across_a_switch(board, subtests, before, after):
    """Turn 1 (thinking, a tool call) on one account, the tool result and a further thinking turn
    on the other. One switch per pair, every caller protocol streamed and not at once: account
    changes are slow."""
    board.serve_with(before)
    conversations: dict[tuple[str, bool], Conversation] = {}
    for name in MULTI_TURN:
        for stream in (False, True):
            conversation = PROTOCOLS[name](board.clients, MODEL, stream=stream, tools=True, think=True)
            conversations[name, stream] = conversation
            first = conversation.say(f"[[think]] {CALL_PROMPT}")
            assert first.served_by["x-switchyard-account"] == board.accounts[before]
            assert first.calls == [("get_weather", {"city": "Paris"})], (name, first)
    board.serve_with(after)
    for (name, stream), conversation in conversations.items():
        with subtests.test(protocol=name, stream=stream):
            second = conversation.answer_calls(RESULT)
            assert second.served_by["x-switchyard-account"] == board.accounts[after]
            assert second.text.startswith("tool result:") and "18" in second.text, second
            third = conversation.say("[[think]] and tomorrow?")
            assert third.text == "echo: [[think]] and tomorrow?", third
            if after != "openai":  # the simulated OpenAI upstream never reasons
                assert third.thoughts == [THOUGHT], third
