"""Headless Chromium for the dashboard's tests and benchmark, and a served dashboard process.

Chromium runs only with the flags that keep it from phoning home (component updates, sync,
safe browsing, DNS prefetch), a resolver that answers nothing but loopback, a dead proxy for
anything that is not loopback, and a fresh profile directory. Selenium is given the driver
and browser paths, so its own driver manager (which downloads) never runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[3]
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-domain-reliability", "--dns-prefetch-disable",
    # TESTLAB's rules, plus 127.0.0.2 (loopback too): the token test serves there
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, "
    "EXCLUDE 127.0.0.2",
    "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.0/8;localhost",
    "--no-default-browser-check", "--disable-dev-shm-usage", "--window-size=1400,1000",
)


def missing() -> str | None:
    """Why no browser test can run here (None: it can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


class Browser:
    """A Chromium driven by Selenium, with its own throw-away profile."""

    def __init__(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        os.environ.setdefault("SE_AVOID_STATS", "true")
        self.profile = tempfile.mkdtemp(prefix="wf-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(30)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def wait(self, predicate, timeout: float = 20.0, what: str = "condition"):
        """Poll predicate(driver) until it returns something true; that value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                value = predicate(self.driver)
            except Exception as e:  # noqa: BLE001 - the page is mid-update: try again
                last, value = e, None
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


class Served:
    """`warpforge-launch serve` in its own process, on a port the OS picks."""

    def __init__(self, *args: str, env: dict | None = None, cwd: Path | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "warpforge_launch", "serve", "--port", "0", *args],
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline()
        if not line.startswith("serving "):
            self.stop()
            raise RuntimeError(f"serve did not start: {line}{self.proc.stderr.read()}")
        self.url = line.split()[1].split("?")[0]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=15)
