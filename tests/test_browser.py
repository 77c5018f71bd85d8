"""A real browser against the gateway: Debian's chromium, driven through its chromedriver.

A page on a listed origin calls the gateway with `fetch` — a JSON POST with the key, and a stream —
and gets its answers; a page on any other origin is refused, its no-preflight text/plain POST
(the way any site could spend the user's quota) included; and a name that resolves to 127.0.0.1
(what a DNS-rebinding page uses) gets no answer but a refusal.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.support.wait import WebDriverWait

from chromium import headless
from conftest import API_KEY, Gateway

MODEL = "gemini-2.5-flash"
WAIT = 30  # seconds a page may take to report

# Each page runs `run()` and leaves what it got in window.result.
PAGE = """<!doctype html><title>page</title><script>
const GW = %(gateway)s, KEY = %(key)s, MODEL = %(model)s;
const chat = (text, extra) => JSON.stringify({model: MODEL, messages: [{role: "user", content: text}], ...extra});
%(run)s
window.result = null;
run().then(r => { window.result = r; }, e => { window.result = {error: String(e)}; });
</script>"""

LISTED_PAGE = """
async function run() {
  const headers = {"content-type": "application/json", "authorization": "Bearer " + KEY, "x-stainless-os": "Linux"};
  const whole = await fetch(GW + "/v1/chat/completions", {method: "POST", headers, body: chat("from the page")});
  const answer = await whole.json();
  const stream = await fetch(GW + "/v1/chat/completions", {method: "POST", headers, body: chat("streamed to the page", {stream: true})});
  const reader = stream.body.getReader(), decoder = new TextDecoder();
  let raw = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    raw += decoder.decode(value, {stream: true});
  }
  let streamed = "";
  for (const line of raw.split("\\n")) {
    if (!line.startsWith("data: {")) continue;
    const event = JSON.parse(line.slice(6));
    if (event.choices.length) streamed += event.choices[0].delta.content || "";
  }
  return {status: whole.status, content: answer.choices[0].message.content, model: whole.headers.get("x-switchyard-model"),
          stream_status: stream.status, streamed, finished: raw.trim().endsWith("data: [DONE]")};
}
"""

FOREIGN_PAGE = """
async function run() {
  let read;
  try {
    const r = await fetch(GW + "/v1/chat/completions", {method: "POST", body: chat("read by a foreign page"),
                          headers: {"content-type": "application/json", "authorization": "Bearer " + KEY}});
    read = "read: " + await r.text();
  } catch (e) {
    read = "refused: " + e.name;
  }
  // What any site can do without a preflight: the answer is opaque, the spending would not be.
  await fetch(GW + "/v1/chat/completions", {method: "POST", mode: "no-cors", headers: {"content-type": "text/plain"},
                                            body: chat("spent by a foreign page")});
  await fetch(GW + "/v1/chat/completions", {method: "POST", mode: "no-cors", body: new Blob([chat("typeless")])});
  return {read};
}
"""


class Page:
    """One page on its own loopback port, so its own origin; what it serves can be set later."""

    def __init__(self) -> None:
        self.html = b""
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(page.html)))
                self.end_headers()
                self.wfile.write(page.html)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pages() -> Iterator[Callable[[], Page]]:
    made: list[Page] = []

    def make() -> Page:
        made.append(Page())
        return made[-1]

    yield make
    for page in made:
        page.close()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    # a name that resolves to loopback, as a rebinding page's does
    with headless("--host-resolver-rules=MAP rebind.test 127.0.0.1", page_load_timeout=WAIT) as driver:
        yield driver


def script(gateway: Gateway, run: str) -> bytes:
    values = {"gateway": json.dumps(gateway.url), "key": json.dumps(API_KEY), "model": json.dumps(MODEL), "run": run}
    return (PAGE % values).encode()


def result(driver: webdriver.Chrome) -> dict[str, Any]:
    return WebDriverWait(driver, WAIT).until(lambda d: d.execute_script("return window.result"))


def generations(gateway: Gateway) -> int:
    return sum(1 for e in gateway.sim.log() if "enerateContent" in e["path"])


@pytest.mark.parametrize("auth_mode", ["off", "strict"])
def test_pages_in_a_real_browser(make_gateway, pages, browser, auth_mode):
    listed, foreign = pages(), pages()
    gateway = make_gateway({"proxy": {"auth_mode": auth_mode, "cors_origins": [listed.origin]}}, start=False)
    gateway.add_google()
    gateway.start()
    listed.html, foreign.html = script(gateway, LISTED_PAGE), script(gateway, FOREIGN_PAGE)

    browser.get(listed.origin + "/")
    got = result(browser)
    assert "error" not in got, got
    assert got["status"] == 200 and got["content"] == "echo: from the page"
    assert got["model"] == MODEL  # an exposed header the page may read
    assert got["stream_status"] == 200 and got["finished"]
    assert got["streamed"] == "echo: streamed to the page"

    before = generations(gateway)
    browser.get(foreign.origin + "/")
    got = result(browser)
    assert got == {"read": "refused: TypeError"}, got
    # The preflight of the first fetch, then both no-cors posts: each refused, none reached an account.
    WebDriverWait(gateway, 10).until(lambda g: g.log().count("forbidden 403") == 3)
    assert generations(gateway) == before

    browser.get(f"http://rebind.test:{gateway.port}/healthz")
    body = browser.find_element("tag name", "body").text
    assert "allowed_hosts" in body and '"status":"ok"' not in body
