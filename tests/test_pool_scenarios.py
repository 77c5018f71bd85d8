"""The pool that heals itself, scenario by scenario, with Pool and Dispatcher driven in this
process against the simulated upstream (fast, and exact about timing). Each scenario asserts the
accounts the upstream saw, what the caller got, and the cooldowns `accounts list --json` shows.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from pool_rig import MODEL, Rig, generations, list_output, listed

from pool import cli
from pool.health import ErrorClass, Verdict
from pool.state import ACCOUNT_SCOPE, StateFile



@pytest.fixture
async def make_rig(sim, tmp_path):
    rigs: list[Rig] = []

    def make(**config) -> Rig:
        rig = Rig(sim, tmp_path / f"rig{len(rigs)}", **config)
        rigs.append(rig)
        return rig

    sim.clear_log()
    yield make
    for rig in rigs:
        await rig.close()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def row(rig: Rig, account_id: str) -> dict:
    rig.pool.save()
    return next(r for r in listed(rig.home) if r["id"] == account_id)


# --- error classes ---------------------------------------------------------------------------------


async def test_rate_limit_storm_on_two_of_three_accounts(make_rig, sim):
    rig = make_rig()
    (a, a_mail), (b, b_mail), (c, c_mail) = rig.add(), rig.add(), rig.add()
    sim.behave("429", {"account": a_mail}, retry_delay="30s")
    sim.behave("429", {"account": b_mail}, retry_after=45)
    answers = [await rig.ask() for _ in range(10)]
    assert [x.status for x in answers] == [200] * 10
    assert {x.account for x in answers} == {c}
    seen = generations(sim)
    # Each limited account was tried once, then left alone while it cools.
    assert Counter(seen) == Counter({(a_mail, 429): 1, (b_mail, 429): 1, (c_mail, 200): 10})
    now = time.time()
    for account_id, hint in ((a, 30), (b, 45)):
        cooldown = row(rig, account_id)["cooldowns"][MODEL]
        assert cooldown["error_class"] == "rate_limit"
        assert hint - 3 < cooldown["until"] - now <= hint
    assert row(rig, c)["cooldowns"] == {}


async def test_rate_limit_without_hint_backs_off_exponentially_and_success_clears(make_rig, sim):
    rig = make_rig()
    a, a_mail = rig.add()
    rule = sim.behave("429", {"account": a_mail}, reason="RATE_LIMIT_EXCEEDED")
    lengths = []
    for _ in range(3):
        assert (await rig.ask()).status == 429
        cooldown = rig.pool.account_state(a).cooldowns[MODEL]
        lengths.append(cooldown.until - time.time())
        cooldown.until = time.time() - 0.01  # let it expire: the next request is its probe
    assert [round(x) for x in lengths] == [15, 30, 60]
    sim.delete_rule(rule)
    assert (await rig.ask()).status == 200
    assert rig.pool.account_state(a).cooldowns == {}


async def test_quota_exhausted_skips_account_until_reset_then_probes_once(make_rig, sim):
    rig = make_rig()
    a, a_mail = rig.add(priority=0)
    b, b_mail = rig.add(priority=1)
    reset = math.ceil(time.time()) + 2
    sim.set_quota(a_mail, MODEL, remainingFraction=0.0, resetTime=iso(reset))
    first = await rig.ask()
    assert (first.status, first.account) == (200, b)
    cooldown = row(rig, a)["cooldowns"][MODEL]
    assert cooldown["error_class"] == "quota_exhausted"
    assert reset - 0.05 <= cooldown["until"] <= reset + 0.5  # the reset time, neither early nor late
    for _ in range(3):  # while it cools, the preferred account is not even tried
        assert (await rig.ask()).account == b
    assert generations(sim) == [(a_mail, 429)] + [(b_mail, 200)] * 4
    await asyncio.sleep(max(reset - time.time(), 0) + 0.1)
    # After the reset one request probes the account; the others do not pile onto it meanwhile.
    sim.clear_log()
    sim.behave("stall", {"account": a_mail}, times=1, seconds=0.6)
    probe = asyncio.create_task(rig.ask())
    await asyncio.sleep(0.2)
    during = [await rig.ask() for _ in range(3)]
    assert {x.account for x in during} == {b}
    assert (await probe).account == a
    assert generations(sim).count((a_mail, 200)) == 1
    assert row(rig, a)["cooldowns"] == {}
    assert (await rig.ask()).account == a  # full traffic again


async def test_capacity_error_retries_the_same_account_after_a_short_wait(make_rig, sim):
    rig = make_rig()
    a, a_mail = rig.add(priority=0)
    b, b_mail = rig.add(priority=1)
    sim.behave("429", {"account": a_mail}, times=1, reason="MODEL_CAPACITY_EXHAUSTED", retry_delay="0.4s")
    start = time.monotonic()
    answer = await rig.ask()
    elapsed = time.monotonic() - start
    assert (answer.status, answer.account) == (200, a)
    assert 0.4 <= elapsed < 2.0
    assert generations(sim) == [(a_mail, 429), (a_mail, 200)]
    assert row(rig, a)["cooldowns"] == {}
    # Twice in a row: the account cools briefly for that model and the next one serves.
    sim.clear_log()
    sim.behave("429", {"account": a_mail}, times=2, reason="MODEL_CAPACITY_EXHAUSTED", retry_delay="0.2s")
    assert (await rig.ask()).account == b
    assert generations(sim) == [(a_mail, 429), (a_mail, 429), (b_mail, 200)]
    cooldown = row(rig, a)["cooldowns"][MODEL]
    assert cooldown["error_class"] == "capacity" and cooldown["until"] - time.time() < 1


async def test_401_refreshes_the_token_and_succeeds(make_rig, sim):
    rig = make_rig()
    a, a_mail = rig.add()
    assert (await rig.ask()).status == 200
    before = next(x for x in sim.google_accounts() if x["email"] == a_mail)["refresh_count"]
    sim.clear_log()
    sim.behave("401", {"account": a_mail}, times=1)
    answer = await rig.ask()
    assert (answer.status, answer.account) == (200, a)
    after = next(x for x in sim.google_accounts() if x["email"] == a_mail)["refresh_count"]
    assert after == before + 1
    calls = [(e["kind"], e["status"]) for e in sim.log() if e["kind"] in ("google", "oauth")]
    assert calls[:3] == [("google", 401), ("oauth", 200), ("google", 200)]
    assert row(rig, a)["cooldowns"] == {}


async def test_validation_required_parks_the_account_and_list_shows_the_url(make_rig, sim):
    rig = make_rig()
    a, a_mail = rig.add(priority=0)
    b, _ = rig.add(priority=1)
    url = "https://accounts.google.com/signin/continue?sarp=1&scc=1&plt=AKgnsbt"
    sim.behave("403", {"account": a_mail}, reason="VALIDATION_REQUIRED", validation_url=url,
               message="Verify your account to continue.")
    assert (await rig.ask()).account == b
    assert (await rig.ask()).account == b
    assert generations(sim).count((a_mail, 403)) == 1
    record = row(rig, a)
    assert record["validation_url"] == url
    assert record["cooldown_until"] - time.time() > 23 * 3600
    assert record["cooldowns"][ACCOUNT_SCOPE]["error_class"] == "validation_required"
    table = list_output(rig.home)
    assert f"open {url}" in table and f"switchyard accounts enable {a}" in table
    # The user verifies and enables it: the running pool takes it back within one sync.
    sim.clear_rules()
    cli.cmd_enable(argparse.Namespace(id=a), rig.home)
    rig.pool.sync()
    assert (await rig.ask()).account == a


async def test_invalid_grant_disables_the_account_with_its_reason(make_rig, sim):
    rig = make_rig()
    a, a_mail = rig.add(priority=0)
    b, _ = rig.add(priority=1)
    sim.revoke(rig.account(a).secret)
    assert (await rig.ask()).account == b
    assert (await rig.ask()).account == b
    record = row(rig, a)
    assert record["enabled"] is False
    assert record["disabled_reason"].startswith("invalid_grant:")
    assert "revoked" in record["disabled_reason"]
    table = list_output(rig.home)
    assert "disabled: invalid_grant" in table and "accounts login" in table
    assert rig.account(a).secret not in table


async def test_every_account_cooling_answers_429_with_the_earliest_recovery(make_rig, sim):
    rig = make_rig()
    _, a_mail = rig.add()
    _, b_mail = rig.add()
    sim.behave("429", {"account": a_mail}, retry_delay="40s")
    sim.behave("429", {"account": b_mail}, retry_delay="90s")
    first = await rig.ask()
    assert first.status == 429 and first.retry_after is not None
    sim.clear_log()
    second = await rig.ask()
    assert second.status == 429 and "cooling" in second.message
    assert 38 <= second.retry_after <= 40
    assert generations(sim) == []  # known to be cooling: nothing was tried


async def test_all_cooling_with_a_probe_in_flight_waits_for_its_outcome(make_rig, sim):
    """An expired cooldown lets one request through; the others wait for it, not fail."""
    rig = make_rig()
    a, a_mail = rig.add()
    sim.behave("429", {"account": a_mail}, times=1, retry_delay="0.3s")
    assert (await rig.ask()).status == 429
    await asyncio.sleep(0.35)
    sim.clear_log()
    sim.behave("stall", {"account": a_mail}, times=1, seconds=0.4)
    answers = await asyncio.gather(*(rig.ask() for _ in range(4)))
    assert [x.status for x in answers] == [200] * 4
    assert [s for _, s in generations(sim)] == [200] * 4
    started = sorted(e["t"] for e in sim.log("google") if "enerateContent" in e["path"])
    assert started[1] - started[0] >= 0.35  # the others went only once the probe had succeeded


# --- scheduling ---------------------------------------------------------------------------------------


async def test_balance_spreads_load_and_keeps_low_quota_accounts_for_last(make_rig, sim):
    rig = make_rig()
    ids = [rig.add()[0] for _ in range(3)]
    low = ids[2]
    sim.set_quota(rig.account(low).email, MODEL, remainingFraction=0.05)
    for account_id in ids:
        await rig.pool.refresh_quota(rig.account(account_id))
    served = Counter([(await rig.ask()).account for _ in range(30)])
    assert served == {ids[0]: 15, ids[1]: 15}  # equal accounts take turns; 5 % left is kept for last
    # Kept for last is not locked out: with the others cooling it serves.
    for account_id in ids[:2]:
        sim.behave("429", {"account": rig.account(account_id).email}, retry_delay="30s")
    assert {(await rig.ask()).account for _ in range(3)} == {low}


async def test_balance_shares_follow_remaining_quota_and_health(make_rig, sim):
    rig = make_rig(quota={"protect_below": 0})
    quarter, full, failing = rig.add()[0], rig.add()[0], rig.add()[0]
    sim.set_quota(rig.account(quarter).email, MODEL, remainingFraction=0.25)
    for account_id in (quarter, full, failing):
        await rig.pool.refresh_quota(rig.account(account_id))
    # A recent failure on this model (its short cooldown already over) halves the weight; one
    # on another model does not count.
    rig.pool.penalize(rig.account(failing), MODEL, Verdict(ErrorClass.SERVER, "a recent 500", 500))
    rig.pool.account_state(failing).cooldowns.clear()
    rig.pool.penalize(rig.account(full), "other-model", Verdict(ErrorClass.SERVER, "elsewhere", 500))
    served = Counter([(await rig.ask()).account for _ in range(70)])
    # Weights 0.25 : 1 : 0.5 -> shares 10 : 40 : 20, give or take the order of ties.
    assert abs(served[quarter] - 10) <= 2 and abs(served[full] - 40) <= 2 and abs(served[failing] - 20) <= 2, served


async def test_performance_first_prefers_the_fast_account(make_rig, sim):
    rig = make_rig(routing={"scheduling": "performance_first"})
    slow, slow_mail = rig.add()
    fast, _ = rig.add()
    sim.behave("stall", {"account": slow_mail}, seconds=0.3)
    served = Counter([(await rig.ask()).account for _ in range(10)])
    assert served[slow] == 1 and served[fast] == 9  # measured once, then avoided


async def test_cache_first_sessions_stick_and_move_only_when_their_account_cools(make_rig, sim):
    rig = make_rig(routing={"scheduling": "cache_first"})
    ids = [rig.add()[0] for _ in range(3)]
    homes = {s: (await rig.ask(session=s)).account for s in ("s1", "s2", "s3", "s4")}
    for _ in range(5):
        for session, account_id in homes.items():
            assert (await rig.ask(session=session)).account == account_id
    cooled = homes["s1"]
    sim.behave("429", {"account": rig.account(cooled).email}, retry_delay="30s")
    moved = (await rig.ask(session="s1")).account
    assert moved != cooled and moved in ids
    for _ in range(3):
        assert (await rig.ask(session="s1")).account == moved
    others = {s: a for s, a in homes.items() if s != "s1" and a != cooled}
    for session, account_id in others.items():
        assert (await rig.ask(session=session)).account == account_id


async def test_cache_first_waits_for_its_own_busy_account(make_rig, sim):
    rig = make_rig(routing={"scheduling": "cache_first"})
    a, a_mail = rig.add(max_concurrent=1)
    b, _ = rig.add(priority=1)
    assert (await rig.ask(session="mine")).account == a
    sim.behave("stall", {"account": a_mail}, times=1, seconds=0.5)
    other = asyncio.create_task(rig.ask(session="someone-else"))
    await asyncio.sleep(0.1)
    start = time.monotonic()
    mine = await rig.ask(session="mine")  # a is busy: wait for it rather than lose the cache
    assert mine.account == a and time.monotonic() - start >= 0.3
    assert (await other).account == a


async def test_max_concurrent_holds_under_50_concurrent_requests(make_rig, sim):
    rig = make_rig()
    limits = {}
    for limit in (2, 3):
        account_id, email = rig.add(max_concurrent=limit)
        limits[email] = limit
    sim.settings(latency=0.1)
    start = time.time()
    answers = await asyncio.gather(*(rig.ask() for _ in range(50)))
    assert [x.status for x in answers] == [200] * 50
    peaks = {}
    for email in limits:
        times = sorted(e["t"] for e in sim.log("google") if e["account"] == email and e["t"] >= start and "enerateContent" in e["path"])
        # The sim answers 0.1 s after it logs a request: overlaps are what ran at once.
        peaks[email] = max(sum(1 for u in times if t <= u < t + 0.1) for t in times)
    assert peaks == limits
    assert sum(rig.pool.in_flight(a.id) for a in rig.pool.accounts) == 0


# --- quota refresh ------------------------------------------------------------------------------------


async def test_background_quota_refresh_is_jittered_single_flight_and_drives_cooldowns(make_rig, sim):
    rig = make_rig(quota={"refresh_interval": 1.0})
    a, a_mail = rig.add()
    b, b_mail = rig.add()
    pool = rig.pool
    reset = math.ceil(time.time()) + 3600
    sim.set_quota(a_mail, MODEL, remainingFraction=0.0, resetTime=iso(reset))
    sim.behave("stall", {"path": "fetchAvailableModels", "account": b_mail}, times=1, seconds=1.5)
    task = asyncio.create_task(pool.run())
    try:
        await asyncio.sleep(3.2)
    finally:
        task.cancel()
    fetches = Counter(e["account"] for e in sim.log("google") if "fetchAvailableModels" in e["path"])
    # A first fetch within one interval, then one per ~second; never one per tick (0.5 s).
    assert 2 <= fetches[a_mail] <= 4
    assert fetches[b_mail] <= 2  # the first fetch stalled 1.5 s: no second one beside it
    # The fetched reset time became the cooldown; nothing was sent to find out.
    assert pool.account_state(a).cooldowns[MODEL].until == reset
    assert (await rig.ask()).account == b
    assert (a_mail, 429) not in generations(sim)
    # The quota comes back early: the next fetch ends the cooldown.
    sim.set_quota(a_mail, MODEL, remainingFraction=0.5)
    await pool.refresh_quota(rig.account(a))
    assert MODEL not in pool.account_state(a).cooldowns
    dues = [pool._quota_interval() for _ in range(5)]
    assert len(set(dues)) == 5 and all(0.9 <= d <= 1.1 for d in dues)


async def test_quota_exhausted_without_a_hint_fetches_the_reset_time(make_rig, sim):
    rig = make_rig(quota={"refresh_interval": 600})
    a, a_mail = rig.add(priority=0)
    rig.add(priority=1)
    pool = rig.pool
    reset = math.ceil(time.time()) + 900
    sim.set_quota(a_mail, MODEL, remainingFraction=0.0, resetTime=iso(reset))
    sim.behave("429", {"account": a_mail}, times=1, reason="QUOTA_EXHAUSTED")  # no delay in it
    await rig.ask()
    assert pool.account_state(a).cooldowns[MODEL].until - time.time() > 3000  # the 1 h guess...
    pool.refresh_quotas_due()
    await asyncio.gather(*pool._quota_tasks.values())
    assert pool.account_state(a).cooldowns[MODEL].until == reset  # ...replaced by the real reset


# --- state across restarts and the CLI ---------------------------------------------------------------


async def test_state_survives_a_restart(make_rig, sim):
    rig = make_rig(routing={"scheduling": "cache_first"})
    a, a_mail = rig.add()
    b, _ = rig.add()
    sim.behave("429", {"account": a_mail}, retry_delay="60s")
    home = (await rig.ask(session="conversation")).account
    assert home == b
    await rig.pool.persist()
    again = Rig(sim, rig.home.config_dir, routing={"scheduling": "cache_first"})
    try:
        cooldown = again.pool.account_state(a).cooldowns[MODEL]
        assert cooldown.until - time.time() > 55
        assert again.pool.state.sessions["conversation"].account_id == b
        sim.clear_rules()
        assert (await again.ask(session="conversation")).account == b
    finally:
        await again.close()


async def test_cli_enable_wins_over_a_running_pools_newer_record(make_rig, sim):
    rig = make_rig()
    a, a_mail = rig.add()
    pool = rig.pool
    sim.behave("429", {"account": a_mail}, retry_delay="60s")
    await rig.ask()
    await pool.persist()
    cli.cmd_enable(argparse.Namespace(id=a), rig.home)  # the user clears it...
    # ...while the pool, not yet synced, records a failure after that
    pool.penalize(rig.account(a), MODEL, Verdict(ErrorClass.RATE_LIMIT, "again", 429, retry_after=60))
    assert pool.account_state(a).updated_at > StateFile(rig.home.state_file).load().accounts[a].updated_at
    await pool.persist()  # refused: the file changed under it
    pool.sync()
    assert pool.account_state(a).cooldowns == {}
    await pool.persist()
    assert StateFile(rig.home.state_file).load().accounts[a].cooldowns == {}
