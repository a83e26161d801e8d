"""Headless Chromium for the status-page tests (Debian's `chromium` and `chromium-driver`,
driven by Selenium): one place that finds the browser, says what to install when it is
missing, and never lets Selenium fetch a driver from the network.

Owns starting and quitting the browser; must not know what a page shows (tests do).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


@contextmanager
def headless_chromium(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Selenium Chrome driver on headless Chromium, 1280x720, quit on exit. Fails (skips
    with STREAMS_ALLOW_MISSING_CHROMIUM=1) when chromium or chromedriver is missing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        message = (
            "chromium and chromedriver not found: install them with "
            "`apt-get install chromium chromium-driver` (Debian)"
        )
        if os.environ.get("STREAMS_ALLOW_MISSING_CHROMIUM"):
            pytest.skip(message)
        pytest.fail(message)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1280,720"):  # fmt: skip
        options.add_argument(arg)
    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium fetch a driver
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.set_page_load_timeout(20)
        yield browser
    finally:
        browser.quit()
