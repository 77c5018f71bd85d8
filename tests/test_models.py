"""The model catalogue and model names: reading fetchAvailableModels, reading a model id, and
routing a caller's name to what the pool serves — pure functions and a Pool with no upstream."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pool import mapping, models
from pool.accounts import Account, AccountStore, new_id
from pool.config import parse
from pool.models import Ident, identify
from pool.paths import Home
from pool.pool import QUOTA_STARTUP_SPREAD, Pool
from pool.state import Quota, State

RESET = "2031-01-02T03:04:05Z"

# The catalogue of the agreed behaviour (v1internal spec, section 3): name -> (displayName, maxOutputTokens).
SPEC_MODELS: dict[str, tuple[str, int]] = {
    "claude-opus-4-6-thinking": ("Claude Opus 4.6 (Thinking)", 64000),
    "claude-sonnet-4-6": ("Claude Sonnet 4.6", 64000),
    "gemini-3.1-pro-high": ("Gemini 3.1 Pro (High)", 65535),
    "gemini-3.1-pro-low": ("Gemini 3.1 Pro (Low)", 65535),
    "gemini-pro-agent": ("Gemini 3.1 Pro (High)", 65535),
    "gemini-3-flash": ("Gemini 3 Flash", 65536),
    "gemini-3.1-flash-image": ("Gemini 3.1 Flash Image", 32768),
    "gemini-2.5-flash": ("Gemini 2.5 Flash", 65535),
    "gpt-oss-120b-medium": ("GPT-OSS 120B (Medium)", 32768),
}
INTERNAL = ("chat_20706", "chat_23310", "tab_flash_lite_preview")
DEPRECATED = {
    "claude-sonnet-4-5": "claude-sonnet-4-6",
    "claude-opus-4-5-thinking": "claude-opus-4-6-thinking",
    "gemini-3-pro-high": "gemini-3.1-pro-high",
    "gemini-3-pro-low": "gemini-3.1-pro-low",
    "gemini-2.5-pro": "gemini-3.1-pro-high",
}


def spec_answer() -> dict[str, Any]:
    """fetchAvailableModels as the service answers it, internal names included."""
    entries = {
        name: {
            "displayName": display, "maxTokens": 1048576, "maxOutputTokens": limit,
            "quotaInfo": {"remainingFraction": 0.75, "resetTime": RESET},
            "supportsThinking": True, "supportsImages": False, "recommended": True, "modelProvider": "MODEL_PROVIDER_X",
        }
        for name, (display, limit) in SPEC_MODELS.items()
    }
    entries.update({name: {"displayName": name, "maxOutputTokens": 8192, "quotaInfo": {"remainingFraction": 1}} for name in INTERNAL})
    return {"models": entries, "deprecatedModelIds": {old: {"newModelId": new} for old, new in DEPRECATED.items()}}


SPEC = models.read_catalogue(spec_answer())
SPEC_OFFER = mapping.Served(
    {name: entry.display_name for name, entry in SPEC.models.items()}, SPEC.forwards
)


# --- reading fetchAvailableModels ------------------------------------------------------------------------


def test_the_catalogue_keeps_every_model_with_its_quota_name_and_limits():
    assert sorted(SPEC.models) == sorted(SPEC_MODELS)
    reset_at = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    for name, (display, limit) in SPEC_MODELS.items():
        assert SPEC.models[name] == Quota(
            remaining=0.75, reset_at=reset_at, display_name=display, max_tokens=1048576, max_output_tokens=limit
        )
    assert SPEC.forwards == DEPRECATED


def test_internal_names_are_dropped_from_models_and_forwards():
    found = models.read_catalogue({
        "models": {"chat_1": {}, "tab_x": {}, "gemini-3-flash": {}},
        "deprecatedModelIds": {"old": {"newModelId": "chat_1"}, "chat_0": {"newModelId": "gemini-3-flash"}},
    })
    assert list(found.models) == ["gemini-3-flash"]
    assert found.forwards == {"chat_0": "gemini-3-flash"}  # a name nobody is routed to: harmless
    assert all(models.internal(name) for name in INTERNAL)
    assert not models.internal("gemini-3-flash") and not models.internal("chatty-model")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"quotaInfo": {"resetTime": RESET}}, {"remaining": 0.0}),  # exhausted: listed with its reset time only
        ({"quotaInfo": {}}, {"remaining": None, "reset_at": None}),
        ({}, {"remaining": None, "display_name": None, "max_output_tokens": None}),
        ("not an object", {"remaining": None}),
        ({"displayName": 7, "maxOutputTokens": "65536", "maxTokens": -1}, {"display_name": None, "max_output_tokens": 65536, "max_tokens": None}),
        ({"maxOutputTokens": "lots", "quotaInfo": {"remainingFraction": "x", "resetTime": "soon"}}, {"max_output_tokens": None, "remaining": None, "reset_at": None}),
        ({"maxOutputTokens": float("inf")}, {"max_output_tokens": None}),
    ],
)
def test_malformed_entries_are_read_as_far_as_they_go(answer, expected):
    entry = models.read_catalogue({"models": {"m": answer}}).models["m"]
    assert {k: getattr(entry, k) for k in expected} == expected


@pytest.mark.parametrize("data", [None, [], {"models": []}, {"models": {"m": {}}, "deprecatedModelIds": ["x"]},
                                  {"deprecatedModelIds": {"a": "b", "c": {"newModelId": 5}, "d": {}}}])
def test_a_malformed_answer_is_never_fatal(data):
    found = models.read_catalogue(data)
    assert found.forwards == {}
    assert set(found.models) <= {"m"}


def test_state_files_of_before_the_catalogue_still_load():
    old = '{"version": 1, "accounts": {"a1": {"quota": {"gemini-2.5-flash": {"remaining": 0.5, "reset_at": null}}}}}'
    state = State.model_validate_json(old)
    record = state.accounts["a1"]
    assert record.quota["gemini-2.5-flash"] == Quota(remaining=0.5)
    assert record.forwards == {}
    record.forwards = {"a": "b"}
    record.quota["gemini-2.5-flash"].max_output_tokens = 100
    again = State.model_validate_json(state.model_dump_json()).accounts["a1"]
    assert again.forwards == {"a": "b"} and again.quota["gemini-2.5-flash"].max_output_tokens == 100


# --- reading a model id -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "display", "expected"),
    [
        ("claude-opus-4-6-thinking", None, Ident("claude-opus", (4, 6), frozenset({"thinking"}))),
        ("claude-sonnet-4-6", "Claude Sonnet 4.6", Ident("claude-sonnet", (4, 6))),
        ("gemini-3.1-pro-high", None, Ident("gemini-pro", (3, 1), frozenset({"high"}))),
        ("gemini-3.1-pro-low", None, Ident("gemini-pro", (3, 1), frozenset({"low"}))),
        ("gemini-3.1-flash-image", None, Ident("gemini-flash-image", (3, 1))),
        ("gemini-pro-agent", "Gemini 3.1 Pro (High)", Ident("gemini-pro", (3, 1), frozenset({"high"}), canonical=False)),
        ("gemini-pro-agent", None, Ident("gemini-pro-agent")),  # no version anywhere: its own words
        ("gemini-2.5-flash-lite", None, Ident("gemini-flash-lite", (2, 5))),
        ("gemini-3-pro-preview", None, Ident("gemini-pro", (3,))),
        ("gemini-2.5-flash-preview-09-2025", None, Ident("gemini-flash", (2, 5))),  # a date is not a version
        ("claude-sonnet-4-5-20250929", None, Ident("claude-sonnet", (4, 5))),
        ("claude-3-5-sonnet-20241022", None, Ident("claude-sonnet", (3, 5))),
        ("claude-opus-4-8", None, Ident("claude-opus", (4, 8))),
        ("gpt-oss-120b-medium", "GPT-OSS 120B (Medium)", Ident("gpt-oss", (), frozenset({"medium"}))),
        ("gpt-5-codex", None, Ident("gpt-codex", (5,))),
        ("models/gemini-flash-latest", None, Ident("gemini-flash")),
        ("gemini-embedding-001", None, Ident("gemini-embedding")),
    ],
)
def test_identify(model_id, display, expected):
    assert identify(model_id, display) == expected


def test_special_families():
    assert identify("gemini-3.1-flash-image").special
    assert identify("gemini-embedding-001").special
    assert not identify("gemini-3-flash").special and not identify("claude-opus-4-6-thinking").special


# --- routing a caller's name --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "routed"),
    [
        ("claude-opus-4-8", "claude-opus-4-6-thinking"),  # newest served opus
        ("claude-opus-4-5-thinking", "claude-opus-4-6-thinking"),  # forwarded
        ("claude-sonnet-4-5", "claude-sonnet-4-6"),  # forwarded
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-6"),  # by family
        ("claude-haiku-4-5", "claude-sonnet-4-6"),  # no haiku served: the next family of the table
        ("claude-3-5-sonnet-20241022", "claude-sonnet-4-6"),
        ("gpt-5-codex", "gemini-3.1-pro-high"),  # the newest pro, its better variant, the canonical id
        ("gpt-5", "gemini-3.1-pro-high"),
        ("o3", "gemini-3.1-pro-high"),
        ("gpt-4o-mini", "gemini-3-flash"),
        ("o4-mini", "gemini-3-flash"),
        ("gemini-3-pro-high", "gemini-3.1-pro-high"),  # forwarded
        ("gemini-3-pro-low", "gemini-3.1-pro-low"),  # forwarded
        ("gemini-2.5-pro", "gemini-3.1-pro-high"),  # forwarded
        ("gemini-3-pro-preview", "gemini-3.1-pro-high"),
        ("gemini-3.1-pro-preview", "gemini-3.1-pro-high"),
        ("gemini-2.5-flash-lite", "gemini-3-flash"),  # newest flash
        ("gemini-flash-latest", "gemini-3-flash"),
        ("gemini-2.5-flash", "gemini-2.5-flash"),  # served as asked, though not the newest
        ("gemini-pro-agent", "gemini-pro-agent"),  # served as asked
        ("models/gemini-3-flash", "gemini-3-flash"),
        ("gemini-2.5-flash-image-preview", "gemini-3.1-flash-image"),  # image to image
        ("gpt-oss-20b", "gpt-oss-120b-medium"),  # its own family first
        ("chat_20706", "chat_20706"),  # never routed: the caller hears 404
        ("tab_flash_lite_preview", "tab_flash_lite_preview"),
        ("mystery", "mystery"),
    ],
)
def test_routing_with_the_spec_catalogue(asked, routed):
    assert mapping.resolve(asked, {}, SPEC_OFFER) == routed


def test_asked_variants_are_preferred_over_versions_and_defaults():
    offer = mapping.Served(["gemini-3-pro-high", "gemini-3.1-pro-low", "gemini-2.5-pro"])
    assert mapping.resolve("gemini-3.5-pro-high", {}, offer) == "gemini-3-pro-high"
    assert mapping.resolve("gemini-3.5-pro-low", {}, offer) == "gemini-3.1-pro-low"
    assert mapping.resolve("gemini-3.5-pro", {}, offer) == "gemini-3.1-pro-low"  # newest wins when none asked
    both = mapping.Served(["claude-sonnet-4-6", "claude-sonnet-4-6-thinking", "claude-opus-4-6-thinking"])
    assert mapping.resolve("claude-sonnet-4-7", {}, both) == "claude-sonnet-4-6"  # the plainer id
    assert mapping.resolve("claude-sonnet-4-7-thinking", {}, both) == "claude-sonnet-4-6-thinking"
    assert mapping.resolve("claude-opus-4-8", {}, both) == "claude-opus-4-6-thinking"


def test_an_alias_stands_in_only_when_no_canonical_id_equals_it():
    alias_only = mapping.Served({"gemini-pro-agent": "Gemini 3.1 Pro (High)", "gemini-3-flash": "Gemini 3 Flash"})
    assert mapping.resolve("gpt-5-codex", {}, alias_only) == "gemini-pro-agent"
    unknown = mapping.Served({"gemini-pro-agent": None, "gemini-3-flash": None})
    assert mapping.resolve("gpt-5-codex", {}, unknown) == "gemini-3-flash"  # an unreadable alias is not a pro: flash, the last resort


def test_image_and_text_families_never_stand_in_for_each_other():
    images = mapping.Served(["gemini-3.1-flash-image", "gemini-embedding-001"])
    assert mapping.resolve("gemini-3-flash", {}, images) == "gemini-3-flash"
    assert mapping.resolve("gpt-4o-mini", {}, images) == "gpt-4o-mini"
    text = mapping.Served(["gemini-3-flash", "gemini-3.1-pro-high"])
    assert mapping.resolve("gemini-3-pro-image-preview", {}, text) == "gemini-3-pro-image-preview"


def test_the_users_mapping_comes_first_and_its_deprecated_targets_are_forwarded():
    assert mapping.resolve("gpt-5-codex", {"gpt-*": "claude-sonnet-4-6"}, SPEC_OFFER) == "claude-sonnet-4-6"
    assert mapping.resolve("claude-opus-4-8", {"claude-*": "gemini-2.5-flash"}, SPEC_OFFER) == "gemini-2.5-flash"
    assert mapping.resolve("gpt-5", {"gpt-5": "gemini-3-pro-high"}, SPEC_OFFER) == "gemini-3.1-pro-high"
    assert mapping.resolve("gpt-5", {"gpt-5": "gemini-4-ultra"}, SPEC_OFFER) == "gemini-4-ultra"  # as written
    # Even a name that is served goes where the user sends it.
    assert mapping.resolve("gemini-2.5-flash", {"gemini-*": "gemini-3-flash"}, SPEC_OFFER) == "gemini-3-flash"


def test_forwarding_follows_renames_but_only_to_what_is_served():
    chain = mapping.Served(["c"], {"a": "b", "b": "c", "x": "y", "y": "x"})
    assert mapping.resolve("a", {}, chain) == "c"
    assert mapping.resolve("x", {}, chain) == "x"  # a loop ends
    unserved = mapping.Served(["claude-sonnet-4-6"], {"claude-sonnet-4-5": "claude-sonnet-4-7"})
    assert mapping.resolve("claude-sonnet-4-5", {}, unserved) == "claude-sonnet-4-6"  # then by family


def test_key_accounts_serve_their_globs_directly():
    openai = mapping.Served(["gpt-4.1"], also=lambda name: name.startswith("gpt-"))
    assert mapping.resolve("gpt-5-codex", {}, openai) == "gpt-5-codex"
    assert mapping.resolve("claude-opus-4-8", {}, openai) == "claude-opus-4-8"  # nothing of its families


def test_nothing_served_leaves_the_name_as_asked():
    assert mapping.resolve("claude-opus-4-8", {}) == "claude-opus-4-8"
    assert mapping.resolve("models/gemini-2.5-pro", {}) == "gemini-2.5-pro"


# --- the pool's catalogue -------------------------------------------------------------------------------


def pool_with(tmp_path: Path, catalogues: dict[str, tuple[bool, models.Catalogue | None]], **config: Any) -> Pool:
    """A Pool with Google accounts whose catalogues are already known: label -> (enabled, catalogue)."""
    home = Home(config_dir=tmp_path, data_dir=tmp_path / "data")
    store = AccountStore(home.accounts_file)
    ids = {}
    for label, (enabled, _found) in catalogues.items():
        account = Account(id=new_id(), kind="google", secret=f"token-{label}", label=label, enabled=enabled)
        store.add(account)
        ids[label] = account.id
    pool = Pool(parse(config), home, transport=None)  # type: ignore[arg-type]  # nothing here goes upstream
    for label, (_enabled, found) in catalogues.items():
        if found is not None:
            pool.apply_quota(ids[label], found)
    return pool


def catalogue(limits: dict[str, int | None], forwards: dict[str, str] | None = None) -> models.Catalogue:
    return models.Catalogue({name: Quota(remaining=1.0, max_output_tokens=limit) for name, limit in limits.items()}, forwards or {})


def test_output_limit_is_the_smallest_any_enabled_account_lists(tmp_path):
    pool = pool_with(tmp_path, {
        "a": (True, catalogue({"claude-sonnet-4-6": 64000, "gemini-3-flash": 65536, "gemini-2.5-flash": None})),
        "b": (True, catalogue({"claude-sonnet-4-6": 32000, "gemini-2.5-flash": None})),
        "c": (False, catalogue({"claude-sonnet-4-6": 1000, "gemini-2.5-flash": 8})),
        "d": (True, None),
    })
    assert pool.output_limit("claude-sonnet-4-6") == 32000
    assert pool.output_limit("gemini-3-flash") == 65536
    assert pool.output_limit("gemini-2.5-flash") is None  # listed, limit unknown; the disabled account does not count
    assert pool.output_limit("claude-opus-4-8") is None


def test_the_pool_routes_on_its_accounts_catalogues(tmp_path):
    pool = pool_with(tmp_path, {"a": (True, SPEC), "off": (False, catalogue({"claude-opus-9": 1}, {"gpt-5": "claude-opus-9"}))})
    assert pool.resolve("claude-opus-4-8") == "claude-opus-4-6-thinking"
    assert pool.resolve("claude-sonnet-4-5") == "claude-sonnet-4-6"
    assert pool.resolve("gpt-5-codex") == "gemini-3.1-pro-high"
    assert pool.resolve("chat_20706") == "chat_20706"
    assert pool.resolve("gpt-5") == "gemini-3.1-pro-high"  # a disabled account's forwards do not count
    assert sorted(pool.catalogue()) == sorted(SPEC_MODELS)
    assert pool.catalogue()["gemini-pro-agent"].display_name == "Gemini 3.1 Pro (High)"
    account = pool.accounts[0]
    assert not pool.serves(account, "chat_20706") and pool.serves(account, "gemini-3-flash")


def test_internal_names_of_an_older_state_file_are_never_served(tmp_path):
    pool = pool_with(tmp_path, {"a": (True, None)})
    account = pool.accounts[0]
    pool.account_state(account.id).quota = {"chat_20706": Quota(remaining=1.0), "gemini-3-flash": Quota(remaining=1.0)}
    assert pool.servable_models() == ["gemini-3-flash"]
    assert not pool.serves(account, "chat_20706")
    assert pool.resolve("chat_20706") == "chat_20706"


async def test_an_account_with_no_catalogue_yet_is_fetched_at_once(tmp_path):
    """Callers' model lists and routing wait for the first catalogue: it is not spread over the
    first seconds like the refresh of a stale one."""
    pool = pool_with(tmp_path, {"new": (True, None), "stale": (True, None), "off": (False, None)})
    new, stale, off = pool.accounts
    pool.account_state(stale.id).quota = {"gemini-3-flash": Quota(remaining=1.0)}  # from a day ago
    pool.account_state(stale.id).quota_fetched_at = time.time() - 86400
    pool.refresh_quotas_due()
    started = dict(pool._quota_tasks)
    for task in started.values():
        task.cancel()
    await asyncio.gather(*started.values(), return_exceptions=True)
    assert set(started) == {new.id}
    assert time.time() < pool._quota_due[stale.id] <= time.time() + QUOTA_STARTUP_SPREAD


def test_readme_carries_the_family_table_from_the_code():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert mapping.family_table() in readme


def test_a_new_catalogue_or_a_disabled_account_changes_where_names_go(tmp_path):
    pool = pool_with(tmp_path, {"a": (True, SPEC), "b": (True, catalogue({"claude-opus-4-7": 1000}))})
    a, b = pool.accounts
    assert pool.resolve("claude-opus-4-8") == "claude-opus-4-7"
    pool.disable(b, "test")
    assert pool.resolve("claude-opus-4-8") == "claude-opus-4-6-thinking"
    pool.apply_quota(a.id, catalogue({"claude-opus-5": 1000}))
    assert pool.resolve("claude-opus-4-8") == "claude-opus-5"
    pool.apply_quota(a.id, catalogue({"gemini-3-flash": 1000}, {"claude-opus-4-8": "gemini-3-flash"}))
    assert pool.resolve("claude-opus-4-8") == "gemini-3-flash"  # forwarded
