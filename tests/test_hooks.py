"""The gateway's walk of the addon chain (addons/hooks.py) against mitmproxy's own, on one chain."""

from __future__ import annotations

import asyncio
import logging

import pytest
from mitmproxy import exceptions
from mitmproxy.addonmanager import AddonManager
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import taddons, tflow

from addons import hooks as fast


class Recorder:
    """Records its hook calls in `calls`; `fail` names the hook it raises on (an exception type)."""

    def __init__(self, label: str, calls: list[str], fail: type[BaseException] | None = None,
                 children: list | None = None, asynchronous: bool = False) -> None:
        self.name = label
        self.calls, self.fail = calls, fail
        if children is not None:
            self.addons = children
        if asynchronous:
            self.request = self._request_async  # type: ignore[method-assign]

    def __repr__(self) -> str:
        return self.name

    def request(self, flow) -> None:
        self.calls.append(f"{self.name}:{flow.request.path}")
        if self.fail is not None:
            raise self.fail("boom")

    async def _request_async(self, flow) -> None:
        await asyncio.sleep(0)
        self.calls.append(f"{self.name}:async")
        if self.fail is not None:
            raise self.fail("boom")


def chain(calls: list[str]) -> list:
    """Nested sub-addons, an async hook, addons without the hook, and a module-like attribute."""
    leaf = Recorder("leaf", calls)
    inner = Recorder("inner", calls, children=[leaf, Recorder("inner-async", calls, asynchronous=True)])
    plain = type("Plain", (), {"name": "plain"})()
    return [Recorder("first", calls), plain, Recorder("outer", calls, children=[inner, Recorder("sibling", calls)]),
            Recorder("last", calls)]


def run(trigger, make_chain) -> tuple[list[str], list[str]]:
    """Calls `trigger` (mitmproxy's or ours) with a request hook; returns the calls and the logged errors."""
    return asyncio.run(_run(trigger, make_chain))


async def _run(trigger, make_chain) -> tuple[list[str], list[str]]:
    calls: list[str] = []
    errors: list[str] = []
    with taddons.context() as tctx:
        for addon in make_chain(calls):
            tctx.master.addons.add(addon)
        manager = tctx.master.addons
        flow = tflow.tflow()
        class Catch(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.levelno >= logging.ERROR:
                    errors.append(f"{record.getMessage()} | {record.exc_info[0].__name__ if record.exc_info else ''}")

        handler = Catch()
        logging.getLogger("mitmproxy.addonmanager").addHandler(handler)
        try:
            await trigger(manager, HttpRequestHook(flow))
        finally:
            logging.getLogger("mitmproxy.addonmanager").removeHandler(handler)
            for stale in [h for h in logging.getLogger().handlers if getattr(h, "master", None) is tctx.master]:
                logging.getLogger().removeHandler(stale)  # the test master's log relay, bound to this loop
    return calls, errors


def test_the_patch_is_installed() -> None:
    assert AddonManager.trigger_event is fast._trigger_event


def test_same_addons_same_order_as_mitmproxy() -> None:
    ours = run(fast._trigger_event, chain)
    theirs = run(fast.mitmproxy_trigger_event, chain)
    assert ours == theirs
    assert ours[0] == ["first:/path", "outer:/path", "inner:/path", "leaf:/path", "inner-async:async",
                       "sibling:/path", "last:/path"]


@pytest.mark.parametrize("where", ["first", "inner", "leaf", "inner-async", "last"])
def test_an_addons_error_is_logged_and_skips_the_rest_of_its_chain_element(where: str) -> None:
    def failing(calls: list[str]) -> list:
        addons = chain(calls)

        def walk(items: list) -> None:
            for a in items:
                if getattr(a, "name", "") == where:
                    a.fail = ValueError
                walk(getattr(a, "addons", []))

        walk(addons)
        return addons

    ours = run(fast._trigger_event, failing)
    assert ours == run(fast.mitmproxy_trigger_event, failing)
    assert ours[1] == ["Addon error: boom | ValueError"]
    assert "last:/path" in ours[0] or where == "last"


@pytest.mark.parametrize("halt", [exceptions.AddonHalt, exceptions.OptionsError])
def test_addon_halt_ends_the_hook_and_options_errors_reach_the_caller(halt: type[Exception]) -> None:
    def halting(calls: list[str]) -> list:
        addons = chain(calls)
        addons[2].addons[0].fail = halt  # "inner"
        return addons

    outcomes = []
    for trigger in (fast._trigger_event, fast.mitmproxy_trigger_event):
        try:
            outcomes.append(("returned", run(trigger, halting)))
        except exceptions.OptionsError:
            outcomes.append(("raised", None))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == ("raised" if halt is exceptions.OptionsError else "returned")
    if halt is exceptions.AddonHalt:
        assert outcomes[0][1][0] == ["first:/path", "outer:/path", "inner:/path"]


def test_a_hook_that_is_not_callable_is_an_error_but_a_module_is_skipped() -> None:
    def odd(calls: list[str]) -> list:
        addons = chain(calls)
        addons[1].request = logging  # a module imported under a hook's name
        addons[3].request = "not a hook"  # type: ignore[assignment]
        return addons

    ours = run(fast._trigger_event, odd)
    assert ours == run(fast.mitmproxy_trigger_event, odd)
    assert len(ours[1]) == 1 and "not callable" in ours[1][0]


def test_handlers_are_gathered_again_when_addons_come_and_go_or_options_change() -> None:
    async def scenario() -> list[list[str]]:
        calls: list[str] = []
        seen: list[list[str]] = []
        with taddons.context() as tctx:
            manager = tctx.master.addons
            first, late = Recorder("first", calls), Recorder("late", calls)
            manager.add(first)

            async def hook() -> None:
                calls.clear()
                await manager.trigger_event(HttpRequestHook(tflow.tflow()))
                seen.append(list(calls))

            await hook()
            manager.add(late)  # registered after the handlers were gathered
            await hook()
            manager.remove(first)
            await hook()
            plain = type("Plain", (), {"name": "plain"})()
            manager.add(plain)
            await hook()
            plain.request = lambda flow: calls.append("given later")  # not seen until something changes
            await hook()
            tctx.options.update(ssl_insecure=True)
            await hook()
            for stale in [h for h in logging.getLogger().handlers if getattr(h, "master", None) is tctx.master]:
                logging.getLogger().removeHandler(stale)
        return seen

    assert asyncio.run(scenario()) == [
        ["first:/path"], ["first:/path", "late:/path"], ["late:/path"], ["late:/path"], ["late:/path"],
        ["late:/path", "given later"],
    ]
