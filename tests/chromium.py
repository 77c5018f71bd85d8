"""Debian's headless chromium, driven by its chromedriver (`.ci/run` installs both): one launcher
for the browser tests, each with a throw-away profile."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server",
)


@contextlib.contextmanager
def headless(*flags: str, page_load_timeout: float) -> Iterator[webdriver.Chrome]:
    """A browser with `flags` beside the usual ones; quit and its profile removed at the end."""
    with tempfile.TemporaryDirectory(prefix="switchyard-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={profile}", *flags):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        driver.set_page_load_timeout(page_load_timeout)
        try:
            yield driver
        finally:
            driver.quit()
