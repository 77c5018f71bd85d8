"""Calls each mitmproxy hook on the addons that have it, at a fraction of mitmproxy's own cost.

mitmproxy 12 runs every hook (and the `update` hook after each flow hook) past every addon in
its chain, about sixty with Switchyard's, through a generator, a coroutine and a context
manager per addon, whether the addon has that hook or not. That walk is four hooks and their
updates per request, and it was the largest single cost of the gateway's whole requests (about
a quarter of its CPU under load). This module teaches `AddonManager.trigger_event` a plain loop
with the same contract: the same handlers in the same order (each chain element's own, then its
sub-addons', gathered as the walk reaches that element), awaited the same way; an addon's error
is logged as mitmproxy logs it and skips the rest of that chain element; `AddonHalt` ends the
hook and `OptionsError` reaches the caller. The synchronous `trigger` (configure, done) is left
alone.

The patch is checked when this module loads (`_check`): a mitmproxy whose addon manager looks
different fails at start, not per request.
"""

from __future__ import annotations

import functools
import inspect
import logging
import types
from collections.abc import Callable, Sequence
from typing import Any

from mitmproxy import exceptions, hooks
from mitmproxy.addonmanager import AddonManager, cut_traceback

log = logging.getLogger("mitmproxy.addonmanager")  # where mitmproxy logs an addon's error


async def _trigger_event(self: AddonManager, event: hooks.Hook) -> None:
    name = event.name
    args: list[Any] | None = None
    for addon in self.chain:
        try:
            for func in _handlers(addon, name):
                if args is None:
                    args = event.args()
                result = func(*args)
                if result is not None and inspect.isawaitable(result):
                    await result
        except exceptions.AddonHalt:
            return
        except exceptions.OptionsError:
            raise
        except Exception as e:
            tb = cut_traceback(e.__traceback__, "_trigger_event")
            log.error(f"Addon error: {e}", exc_info=(type(e), e, tb))


def _handlers(addon: Any, name: str) -> Sequence[Callable[..., Any]]:
    """The chain element's handlers of the hook: its own, then its sub-addons' (mitmproxy's order)."""
    func = getattr(addon, name, None)
    if not hasattr(addon, "addons"):
        return () if not func else (_checked(addon, name, func),)
    found: list[Callable[..., Any]] = [_checked(addon, name, func)] if func else []
    for child in addon.addons:
        found.extend(_handlers(child, name))
    return found


def _checked(addon: Any, name: str, func: Any) -> Callable[..., Any]:
    if callable(func):
        return func
    if isinstance(func, types.ModuleType):  # a module imported under a hook's name is no hook
        return _nothing
    return functools.partial(_not_callable, f"Addon handler {name} ({addon}) not callable")


def _nothing(*args: Any) -> None:
    pass


def _not_callable(message: str, *args: Any) -> None:
    raise exceptions.AddonManagerError(message)


def _check() -> None:
    if not (inspect.iscoroutinefunction(AddonManager.trigger_event) and "chain" in AddonManager.__init__.__code__.co_names):
        raise ImportError("this mitmproxy's addon manager differs from mitmproxy 12's: Switchyard needs mitmproxy 12")


_check()
mitmproxy_trigger_event = AddonManager.trigger_event  # mitmproxy's own, the yardstick of the tests
AddonManager.trigger_event = _trigger_event  # type: ignore[method-assign]
