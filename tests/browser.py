"""Headless Chromium driven by Selenium, fully offline: the browser tests' (and benchmarks/explore.py's) driver.

Debian's ``chromium`` and ``chromium-driver`` packages (``ci/browser.sh`` installs them) and Selenium from
PyPI. The driver path is passed explicitly and Selenium Manager is told to stay offline, so nothing is
downloaded. :func:`missing` names what is absent; tests SKIP on it outside CI and FAIL in CI (``CI=true``).
"""
from __future__ import annotations

import os
import shutil

DRIVER = "/usr/bin/chromedriver"
BROWSERS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required")


def _browser() -> str | None:
    return next((b for b in BROWSERS if os.access(b, os.X_OK)), None) or shutil.which("chromium")


def missing() -> str | None:
    """Why a browser test cannot run here (None when it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e .[test])"
    if _browser() is None:
        return "no chromium binary (apt-get install chromium, or run ci/browser.sh)"
    if not os.access(DRIVER, os.X_OK):
        return f"no {DRIVER} (apt-get install chromium-driver, or run ci/browser.sh)"
    return None


def chromium(profile_dir, width: int = 1200, height: int = 760):
    """A headless Chromium with a fresh profile in ``profile_dir``; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download a driver or browser
    options = webdriver.ChromeOptions()
    options.binary_location = _browser()
    for flag in (*FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
