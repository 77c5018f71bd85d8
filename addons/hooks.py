"""Calls each mitmproxy hook on the addons that have it, at a fraction of mitmproxy's own cost.

mitmproxy 12 runs every hook (and the `update` hook after each flow hook) past every addon in
its chain, about sixty with Switchyard's, through a generator, a coroutine and a context
manager per addon, whether the addon has that hook or not. That walk is four hooks and their
updates per request, and it was the largest single cost of the gateway's whole requests (about
a quarter of its CPU under load). This module teaches `AddonManager.trigger_event` a plain loop
over each hook's handlers, gathered once per hook and gathered again whenever an addon is
registered or removed or an option changes, with mitmproxy's contract: the same handlers in
the same order (each chain element's own, then its sub-addons'), awaited the same way; an
addon's error is logged as mitmproxy logs it and skips the rest of that chain element;
`AddonHalt` ends the hook and `OptionsError` reaches the caller. The synchronous `trigger`
(configure, done) is left alone. What the walk no longer sees: a hook method given to an addon
after it was registered.

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
    for handlers in _known(self).of(self, name):
        try:
            for func in handlers:
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


class _Known:
    """Each hook's handlers, by chain element, gathered once: looking for every hook on every
    addon per request costs more than the calls. Forgotten whenever an addon is registered or
    removed (a script loaded or reloaded goes through both) and whenever an option changes."""

    def __init__(self, manager: AddonManager) -> None:
        self.by_hook: dict[str, list[Sequence[Callable[..., Any]]]] = {}
        manager.master.options.changed.connect(self.forget)  # held weakly: this object lives on the manager

    def forget(self, *args: Any, **kwargs: Any) -> None:
        self.by_hook.clear()

    def of(self, manager: AddonManager, name: str) -> list[Sequence[Callable[..., Any]]]:
        found = self.by_hook.get(name)
        if found is None:
            found = self.by_hook[name] = [handlers for addon in manager.chain if (handlers := _handlers(addon, name))]
        return found


def _known(manager: AddonManager) -> _Known:
    known = manager.__dict__.get("_switchyard_known")
    if known is None:
        known = manager.__dict__["_switchyard_known"] = _Known(manager)
    return known


def _handlers(addon: Any, name: str) -> list[Callable[..., Any]]:
    """A chain element's handlers of the hook: its own, then its sub-addons' (mitmproxy's order)."""
    found: list[Callable[..., Any]] = []
    func = getattr(addon, name, None)
    if func:
        if callable(func):
            found.append(func)
        elif not isinstance(func, types.ModuleType):  # a module imported under a hook's name is no hook
            found.append(functools.partial(_not_callable, f"Addon handler {name} ({addon}) not callable"))
    if hasattr(addon, "addons"):
        for child in addon.addons:
            found.extend(_handlers(child, name))
    return found


def _not_callable(message: str, *args: Any) -> None:
    raise exceptions.AddonManagerError(message)


def _forgetting(change: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(change)
    def changed(self: AddonManager, *args: Any, **kwargs: Any) -> Any:
        try:
            return change(self, *args, **kwargs)
        finally:
            if (known := self.__dict__.get("_switchyard_known")) is not None:
                known.forget()
    return changed


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
    if not (inspect.iscoroutinefunction(AddonManager.trigger_event) and "chain" in AddonManager.__init__.__code__.co_names
            and all(callable(getattr(AddonManager, name, None)) for name in ("register", "remove", "clear"))):
        raise ImportError("this mitmproxy's addon manager differs from mitmproxy 12's: Switchyard needs mitmproxy 12")


_check()
mitmproxy_trigger_event = AddonManager.trigger_event  # mitmproxy's own, the yardstick of the tests
AddonManager.trigger_event = _trigger_event  # type: ignore[method-assign]
for _change in ("register", "remove", "clear"):
    setattr(AddonManager, _change, _forgetting(getattr(AddonManager, _change)))
