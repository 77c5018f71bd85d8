"""The dashboard in a real browser: Debian's chromium, driven through its chromedriver, against a
running gateway (mitmweb, strict auth) in front of the simulated upstream. One gateway and one
browser for the module; the tests run in order, as a user would click through the pages.

Each page is also photographed at a desktop width. The pictures go to a temporary directory, or
to $SWITCHYARD_SCREENSHOTS when set: `SWITCHYARD_SCREENSHOTS=docs/screenshots ./scripts/test
tests/test_dashboard_browser.py` refreshes the README's.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest
from chromium import headless
from conftest import API_KEY, Gateway, free_port, prepare_gateway
from pool import admin
from pool.ledger import Ledger, Record
from pool_rig import add_google, home_of, listed
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

WIDTH, HEIGHT = 1280, 860
WAIT = 20  # seconds a page may take to show something
MODEL = "gemini-2.5-flash"


@pytest.fixture(scope="module")
def gw(sim, tmp_path_factory) -> Iterator[Gateway]:
    config = {
        "upstreams": {"antigravity": {"auth_url": f"{sim.url}/o/oauth2/v2/auth", "userinfo_url": f"{sim.url}/userinfo"}},
        "model_mapping": {"gpt-4o*": "gemini-3-flash"},
    }
    gateway = prepare_gateway(sim, tmp_path_factory.mktemp("dashboard-browser"), config)
    home = home_of(gateway.home)
    alice = add_google(sim, home, "alice@example.com")[0]
    bob = add_google(sim, home, "bob@example.com")[0]
    soon = (datetime.now(UTC) + timedelta(hours=2, minutes=14)).isoformat().replace("+00:00", "Z")
    for model, left in (("gemini-3-flash", 0.35), ("claude-sonnet-4-6", 0.06), ("gemini-3.1-pro-high", 0.72)):
        sim.set_quota("alice@example.com", model, remainingFraction=left, resetTime=soon)
    sim.set_quota("bob@example.com", "claude-opus-4-6-thinking", remainingFraction=0.0, resetTime=soon)
    sim.add_api_key("gemini-browser-key-0001", "gemini")
    key = admin.add_key(home, "gemini", "gemini-browser-key-0001", base_url=sim.url, label="gemini key", priority=1).id
    gateway.ids = {"alice": alice, "bob": bob, "key": key}  # type: ignore[attr-defined]
    seed_history(gateway, gateway.ids)  # type: ignore[attr-defined]
    gateway.web = f"http://127.0.0.1:{free_port()}"  # type: ignore[attr-defined]
    gateway.start("--set", f"web_port={gateway.web.rsplit(':', 1)[1]}", "--set", "web_open_browser=false", web=True)  # type: ignore[attr-defined]
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with headless(f"--window-size={WIDTH},{HEIGHT}", page_load_timeout=WAIT) as driver:
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("SWITCHYARD_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def shot(driver: webdriver.Chrome, shots: Path, name: str, most: int = 1100) -> None:
    """The page as it is, at a desktop width and its own height (up to `most` pixels)."""
    driver.execute_script("window.scrollTo(0, 0); document.activeElement && document.activeElement.blur()")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, min(max(height + (HEIGHT - driver.execute_script("return innerHeight")), HEIGHT), most))
    path = shots / f"{name}.png"
    try:
        assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    finally:
        driver.set_window_size(WIDTH, HEIGHT)


def seed_history(gateway: Gateway, ids: dict[str, str]) -> int:
    """A day of earlier requests in the gateway's ledger (written before it starts), so the
    charts have a history to show; the last hour is left to the tests' own requests."""
    rng = random.Random(7)
    shapes = [("gemini-2.5-flash", ids["alice"], "alice@example.com"), ("claude-sonnet-4-6", ids["bob"], "bob@example.com"),
              ("gemini-3-flash", ids["alice"], "alice@example.com"), ("gemini-2.5-flash", ids["key"], "gemini key")]
    records = []
    now = time.time()
    for hour in range(23, 0, -1):
        for _ in range(2 + int(2 * (1 + math.sin(hour / 3.5)))):
            model, account_id, name = rng.choice(shapes)
            failed = rng.random() < 0.08
            latency = rng.uniform(300, 2400)
            records.append(Record(
                at=now - hour * 3600 - rng.uniform(0, 3000), protocol=rng.choice(["openai_chat", "anthropic", "gemini"]),
                operation="generate", requested_model=model, model=model, account_id=account_id, account=name,
                status=429 if failed else 200, error_class="rate_limit" if failed else None, attempts=3 if failed else 1,
                stream=rng.random() < 0.6, latency_ms=latency, ttfb_ms=latency * rng.uniform(0.15, 0.4),
                input_tokens=0 if failed else rng.randint(800, 9000), output_tokens=0 if failed else rng.randint(60, 1800),
            ))
    ledger = Ledger(gateway.home / "data" / "usage.sqlite3", 30)
    ledger.start()
    for record in sorted(records, key=lambda r: r.at):
        ledger.add(record)
    ledger.close()
    return len(records)


def wait(driver: webdriver.Chrome, condition, timeout: float = WAIT):
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def find(driver: webdriver.Chrome, css: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, css)


def open_page(driver: webdriver.Chrome, gw: Gateway, page: str, ready: str) -> None:
    driver.get(f"{gw.url}/ui/#/{page}")
    wait(driver, lambda d: find(d, ready))


def card(driver: webdriver.Chrome, account_id: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'[data-account="{account_id}"]')


def accounts(gw: Gateway) -> list[dict]:
    """`switchyard accounts list --json`, in this process (the test about the CLI runs the command)."""
    return listed(home_of(gw.home))


def chat(gw: Gateway, text: str, model: str = MODEL) -> str:
    answer = gw.openai().chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": text}])
    return answer.headers["x-switchyard-account"]


# --- Accounts -------------------------------------------------------------------------------------------


def test_the_accounts_page_asks_for_the_key_once_and_shows_every_account_with_its_quota_bars(gw, browser, shots):
    browser.get(f"{gw.url}/ui/#/accounts")
    wait(browser, lambda d: d.find_element(By.ID, "key-dialog").get_attribute("open") is not None)
    browser.find_element(By.ID, "key-input").send_keys(API_KEY)
    browser.find_element(By.ID, "key-submit").click()
    listed = accounts(gw)
    wait(browser, lambda d: len(find(d, "[data-account]")) == len(listed))
    for row in listed:
        el = card(browser, row["id"])
        assert row["name"] in el.text and row["kind"] in el.text.lower()
        bars = el.find_elements(By.CSS_SELECTOR, ".quota-bar")
        known = [m for m, q in row["quota"].items() if q["remaining"] is not None]
        assert sorted(b.get_attribute("data-model") for b in bars) == sorted(known)
        if row["kind"] == "google":
            assert len(bars) >= 5
    alice = card(browser, gw.ids["alice"])
    flash = alice.find_element(By.CSS_SELECTOR, '.quota-bar[data-model="gemini-3-flash"] > span')
    assert flash.value_of_css_property("width").endswith("px")
    assert browser.execute_script("return arguments[0].style.width", flash) == "35%"
    assert "resets" in alice.find_element(By.CSS_SELECTOR, '.quota[data-model="claude-sonnet-4-6"]').text
    assert "kept for last" in alice.text  # under protect_below
    # The key stays for the tab: a reload asks for nothing.
    browser.refresh()
    wait(browser, lambda d: len(find(d, "[data-account]")) == len(listed))
    assert browser.find_element(By.ID, "key-dialog").get_attribute("open") is None
    wait(browser, lambda d: "live" == d.find_element(By.ID, "live").text)
    shot(browser, shots, "accounts")


def test_disabling_an_account_on_the_page_shows_in_the_cli(gw, browser):
    bob = gw.ids["bob"]
    card(browser, bob).find_element(By.CSS_SELECTOR, 'button[data-action="disable"]').click()
    wait(browser, lambda d: card(d, bob).get_attribute("data-status") == "disabled")
    row = next(r for r in gw.accounts() if r["id"] == bob)
    assert row["enabled"] is False and row["status"] == "disabled" and row["disabled_reason"] == "disabled by the user"
    # And back, from the CLI this time: the open page hears of it without a reload.
    gw.cli("accounts", "enable", bob)
    wait(browser, lambda d: card(d, bob).get_attribute("data-status") == "ready")
    assert "Disable" in card(browser, bob).text
    # The account check's steps, on the page.
    card(browser, bob).find_element(By.CSS_SELECTOR, 'button[data-action="check"]').click()
    report = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'[data-check="{bob}"]'))[0]
    assert "can serve" in report.text and "token" in report.text and "project" in report.text


# --- Usage and Requests --------------------------------------------------------------------------------------


def test_the_usage_page_draws_charts_after_a_few_requests(gw, browser, shots):
    for i in range(4):
        chat(gw, f"usage {i}")
    chat(gw, "a claude one", model="claude-sonnet-4-6")
    with pytest.raises(openai.BadRequestError):
        gw.openai().chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "x"}])
    open_page(browser, gw, "usage", "#chart-tokens svg")
    tokens = browser.find_element(By.CSS_SELECTOR, "#chart-tokens svg")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chart-tokens svg rect[class^=s]")) >= 3)
    assert MODEL in tokens.text and "claude-sonnet-4-6" in tokens.text  # the legend
    assert find(browser, "#chart-requests svg rect.err")  # the refused request
    assert len(find(browser, "#chart-latency svg circle")) >= 2
    with httpx.Client(base_url=gw.url, headers=gw.auth(), timeout=10) as c:
        total = c.get("/api/stats?since=24h").json()["totals"]["requests"]
    wait(browser, lambda d: f"{total:,}\nrequests" in d.find_element(By.ID, "usage-totals").text)
    browser.find_element(By.CSS_SELECTOR, '[data-control="by"] button[data-value="account"]').click()
    wait(browser, lambda d: "alice@example.com" in d.find_element(By.ID, "usage-table").text)
    browser.find_element(By.CSS_SELECTOR, '[data-control="by"] button[data-value="model"]').click()
    wait(browser, lambda d: MODEL in d.find_element(By.ID, "usage-table").text)
    shot(browser, shots, "usage")


def test_the_requests_page_lists_them_with_their_accounts_and_links_to_mitmweb(gw, browser, shots):
    open_page(browser, gw, "requests", "tr[data-request-id]")
    with httpx.Client(base_url=gw.url, headers=gw.auth(), timeout=10) as c:
        ledger = {r["id"]: r for r in c.get("/api/requests?limit=100").json()["rows"]}
    rows = find(browser, "tr[data-request-id]")
    assert len(rows) == len(ledger)
    for tr in rows:
        row = ledger[int(tr.get_attribute("data-request-id"))]
        assert tr.find_element(By.CSS_SELECTOR, "td.acct").text == (row["account"] or row["account_id"] or "–")
    served = {tr.find_element(By.CSS_SELECTOR, "td.acct").text for tr in rows}
    assert {"alice@example.com", "bob@example.com"} <= served
    # A request made while the page is open appears at the top, with its account.
    account = chat(gw, "while you watch")
    name = next(r["name"] for r in accounts(gw) if r["id"] == account)
    wait(browser, lambda d: int(find(d, "tr[data-request-id]")[0].get_attribute("data-request-id")) > max(ledger))
    top = find(browser, "tr[data-request-id]")[0]
    assert top.find_element(By.CSS_SELECTOR, "td.acct").text == name and top.get_attribute("data-account") == account
    # Each row links to its flow in mitmweb (its token in the link: auth is on here).
    link = top.find_element(By.CSS_SELECTOR, "a.flow-link").get_attribute("href")
    assert link.startswith(gw.web + "/?token=") and "#/flows/" in link
    flow_id = link.split("#/flows/")[1].split("/")[0]
    token = link.split("token=")[1].split("#")[0]
    flows = httpx.get(f"{gw.web}/flows", headers={"authorization": f"Bearer {token}"}, timeout=10).json()
    flow = next(f for f in flows if f["id"] == flow_id)
    assert flow["request"]["path"] == "/v1/chat/completions" and name in flow["comment"]
    # Filters: the failed requests only.
    select = browser.find_element(By.CSS_SELECTOR, 'select[name="status"]')
    select.find_element(By.CSS_SELECTOR, 'option[value="error"]').click()
    failed = [r["id"] for r in ledger.values() if r["error_class"]]
    wait(browser, lambda d: [int(tr.get_attribute("data-request-id")) for tr in find(d, "tr[data-request-id]")] == sorted(failed, reverse=True))
    assert all("bad" in tr.get_attribute("innerHTML") for tr in find(browser, "tr[data-request-id]"))
    select.find_element(By.CSS_SELECTOR, 'option[value=""]').click()
    wait(browser, lambda d: len(find(d, "tr[data-request-id]")) == len(ledger) + 1)
    shot(browser, shots, "requests")


def test_mitmweb_shows_the_comment_column(gw):
    token = httpx.get(f"{gw.url}/api/overview", headers=gw.auth(), timeout=10).json()["mitmweb"].split("token=")[1]
    options = httpx.get(f"{gw.web}/options", headers={"authorization": f"Bearer {token}"}, timeout=10).json()
    assert "comment" in options["web_columns"]["value"]


# --- Google sign-in -------------------------------------------------------------------------------------------


def test_signing_in_with_google_adds_the_account(gw, browser):
    open_page(browser, gw, "accounts", "[data-account]")
    before = len(accounts(gw))
    browser.find_element(By.ID, "google-sign-in").click()
    # Google's page (the simulated one): the user names the account.
    wait(browser, lambda d: d.find_elements(By.ID, "email"))
    assert browser.current_url.startswith(gw.sim.url + "/o/oauth2/v2/auth?")
    browser.find_element(By.ID, "email").send_keys("carol@example.com")
    browser.find_element(By.ID, "next").click()
    wait(browser, lambda d: d.current_url.startswith(f"{gw.url}/ui/#/accounts") and find(d, "[data-account]"))
    wait(browser, lambda d: "carol@example.com" in d.find_element(By.ID, "account-list").text)
    assert "Signed in as carol@example.com" in browser.find_element(By.ID, "flash").text
    carol = next(r for r in accounts(gw) if r["email"] == "carol@example.com")
    assert len(accounts(gw)) == before + 1 and carol["enabled"] and carol["kind"] == "google"
    assert browser.find_element(By.ID, "key-dialog").get_attribute("open") is None  # the key survived the trip
    wait(browser, lambda d: card(d, carol["id"]).find_elements(By.CSS_SELECTOR, ".quota-bar"))


# --- Settings --------------------------------------------------------------------------------------------------


def test_a_bad_setting_shows_its_error_and_changes_nothing(gw, browser, shots):
    path = gw.home / "config.toml"
    before = path.read_bytes()
    open_page(browser, gw, "settings", "#settings-form")
    attempts = browser.find_element(By.CSS_SELECTOR, 'input[name="routing.max_attempts"]')
    attempts.clear()
    attempts.send_keys("0")
    browser.find_element(By.ID, "save-settings").click()
    problem = wait(browser, lambda d: next((e for e in find(d, '.field-error[data-for="routing.max_attempts"]') if e.is_displayed()), None))
    assert "greater than or equal to 1" in problem.text
    assert path.read_bytes() == before
    with httpx.Client(base_url=gw.url, headers=gw.auth(), timeout=10) as c:
        assert c.get("/api/config").json()["fields"]["routing.max_attempts"]["value"] == 3
    shot(browser, shots, "settings")
    # A good value is saved and in force at once.
    attempts.clear()
    attempts.send_keys("4")
    browser.find_element(By.ID, "save-settings").click()
    wait(browser, lambda d: "Saved and applied" in d.find_element(By.ID, "flash").text)
    assert "max_attempts = 4" in path.read_text()
    with httpx.Client(base_url=gw.url, headers=gw.auth(), timeout=10) as c:
        assert c.patch("/api/config", json={"routing.max_attempts": None}).status_code == 200


# --- Overview and Connect -----------------------------------------------------------------------------------------


def test_the_overview_and_connect_pages(gw, browser, shots):
    open_page(browser, gw, "overview", "#count-ready")
    wait(browser, lambda d: d.find_element(By.ID, "count-ready").text == str(len(accounts(gw))))
    assert "Open mitmweb" in browser.find_element(By.ID, "main").text
    assert browser.find_element(By.ID, "mitmweb-link").get_attribute("href").endswith("#/flows?h=~marked")
    assert find(browser, 'tr[data-family="gemini-flash"]')
    shot(browser, shots, "overview")
    open_page(browser, gw, "connect", '[data-client="claude-code"]')
    code = browser.find_element(By.CSS_SELECTOR, '[data-client="openai-sdk"] pre').text
    assert f'base_url="{gw.url}/v1"' in code and API_KEY in code  # the key the user entered, ready to copy
    shot(browser, shots, "connect")

