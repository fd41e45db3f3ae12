"""The explorer page in a real browser: Debian's chromium, headless, driven by selenium through the
system's chromedriver (nothing is downloaded: `SE_OFFLINE` keeps Selenium Manager from fetching a
driver or a browser). `make setup` installs both packages (`make chromium`).

Screenshots go to build/test-artifacts/browser/ (kept after the run, for people to look at)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("WIDEVIEWS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("WIDEVIEWS_CHROMEDRIVER", "/usr/bin/chromedriver")


def _executable(path: str) -> str:
    found = shutil.which(path)
    if found is None:
        pytest.fail(f"{path} not found: `make chromium` installs Debian's chromium and chromium-driver", pytrace=False)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium at 1280x800 that keeps its console log."""
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _executable(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        # WebGL without a GPU: SwiftShader, the software renderer chromium ships.
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(_executable(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot(browser: Any, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """Save the page as build/test-artifacts/browser/<test>-<name>.png."""

    def save(name: str) -> Path:
        path = ARTIFACTS / f"{request.node.name}-{name}.png"
        browser.save_screenshot(str(path))
        return path

    return save


def wait_until(browser: Any, script: str, timeout_s: float = 60, what: str = "") -> Any:
    """Poll a JavaScript expression (`return …`) until it is truthy; its value."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = browser.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    status = browser.execute_script("return document.getElementById('status') && document.getElementById('status').textContent")
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what or script} (last {value!r}; page status {status!r})")


def wait_idle(browser: Any, timeout_s: float = 60) -> None:
    """Until the page has no request or drawing pending (the explorer counts them in wvExplorer.pending)."""
    # Twice, a moment apart: a finished step may start the next one (a plot, then the embedding).
    for _ in range(2):
        wait_until(browser, "return !!window.wvExplorer && window.wvExplorer.pending === 0", timeout_s, "the page to be idle")
        time.sleep(0.2)
