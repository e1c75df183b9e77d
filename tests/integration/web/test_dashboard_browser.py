"""The dashboard in a real browser (headless Chromium) against the real test lab."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.helpers import model_file
from tests.integration.web.browser import Served
from warpforge_launch.inputs import parse_inputs
from warpforge_launch.jobs import JobDefinition
from warpforge_launch.launcher import Launcher

pytestmark = [pytest.mark.ssh, pytest.mark.browser]
HOSTILE = ('<img src=x onerror="window.__pwned=1">', "[/x]",
           "<script>window.__pwned=2</script>")


def submit(web_lab, tmp_path: Path, name: str, **env) -> str:
    with Launcher(str(web_lab["inventory"])) as launcher:
        return launcher.submit(JobDefinition(
            name=name, source=str(model_file(tmp_path)), model_class="SimpleMLP",
            inputs=parse_inputs("[(1, 8)]"), environment=env))


def row_state(driver, job_id):
    rows = driver.find_elements("css selector", f'#jobs tr[data-job-id="{job_id}"] .state')
    return rows[0].text if rows else None


def test_the_page_shows_the_boxes_with_their_releases(served, browser, web_lab):
    d = browser.driver
    d.get(served.url)
    rows = browser.wait(lambda d: {r.get_attribute("data-box"): r for r in
                                   d.find_elements("css selector", "#boxes tbody tr")
                                   if r.find_elements("css selector", ".release")},
                        what="the boxes")
    assert sorted(rows) == ["amd", "intel", "nvidia"]
    lab = web_lab["lab"]
    for name in ("nvidia", "amd"):
        row = rows[name]
        on_box = os.readlink(lab.landed(name, web_lab["install_dir"] + "/current"))
        release = row.find_element("css selector", ".release")
        assert release.text == web_lab["hash"][:12]  # what distribute pushed...
        assert release.get_attribute("title") == on_box.removeprefix("releases/")  # ...and is there
        assert "awake" in row.text and "PASSED" in row.text
        assert row.find_element("css selector", ".switched").text  # the switch time
    assert "NVIDIA" in rows["nvidia"].text and "AMD" in rows["amd"].text
    assert "asleep" in rows["intel"].text and "SKIPPED" in rows["intel"].text
    assert d.find_element("id", "registry").text == "no registry configured"


def test_a_job_submitted_now_turns_completed_without_a_reload(served, browser, web_lab,
                                                              tmp_path):
    d = browser.driver
    d.get(served.url)
    browser.wait(lambda d: d.find_element("id", "range").text, what="the jobs table")
    d.execute_script("window.__sameDocument = 'yes';")
    job_id = submit(web_lab, tmp_path, "mlp-live", WF_FAKE_SLEEP="1.5")
    first = browser.wait(lambda d: row_state(d, job_id), what=f"{job_id} to appear")
    assert first in ("PENDING", "RUNNING")
    browser.wait(lambda d: row_state(d, job_id) == "COMPLETED", timeout=40,
                 what=f"{job_id} to turn COMPLETED")
    assert d.execute_script("return window.__sameDocument") == "yes"  # never reloaded


def test_hostile_job_names_render_as_text(served, browser, web_lab, tmp_path):
    d = browser.driver
    ids = [submit(web_lab, tmp_path, name) for name in HOSTILE]
    d.get(served.url)
    for job_id, name in zip(ids, HOSTILE, strict=True):
        cell = browser.wait(lambda d, j=job_id: d.find_element(
            "css selector", f'#jobs tr[data-job-id="{j}"] td.name'), what=job_id)
        assert cell.text == name
    assert d.find_elements("css selector", "#jobs img, #jobs script") == []
    assert d.execute_script("return window.__pwned") is None
    d.find_element("css selector", f'#jobs tr[data-job-id="{ids[0]}"] a').click()
    browser.wait(lambda d: d.find_element("id", "job-name").text == HOSTILE[0], what="job page")
    assert d.find_elements("css selector", "#job img") == []
    assert d.execute_script("return window.__pwned") is None


def test_the_job_page_follows_the_logs_and_shows_the_stablehlo(served, browser, web_lab,
                                                               tmp_path):
    d = browser.driver
    job_id = submit(web_lab, tmp_path, "mlp-logs", WF_FAKE_SLEEP="2",
                    WF_FAKE_STDERR="hello from the payload")
    d.get(served.url + "#/jobs/" + job_id)
    browser.wait(lambda d: "(following)" in d.find_element("id", "log-state").text
                 or "(complete)" in d.find_element("id", "log-state").text, what="logs")
    browser.wait(lambda d: "hello from the payload" in d.find_element("id", "job-logs").text,
                 timeout=40, what="the payload's output")
    browser.wait(lambda d: d.find_element("id", "log-state").text == "(complete)", timeout=40,
                 what="the end of the logs")
    browser.wait(lambda d: "stablehlo" in d.find_element("id", "job-mlir").text, timeout=20,
                 what="the StableHLO head")
    assert "model.mlir" in d.find_element("id", "job-artifacts").text
    assert d.find_element("id", "job-state").text == "COMPLETED"
    timeline = d.find_element("id", "job-timeline").text
    assert "submitted" in timeline and "COMPLETED" in timeline


def test_cancel_from_the_page(served, browser, web_lab, tmp_path):
    d = browser.driver
    job_id = submit(web_lab, tmp_path, "mlp-cancel", WF_FAKE_SLEEP="60")
    d.get(served.url + "#/jobs/" + job_id)
    button = browser.wait(lambda d: d.find_element("id", "cancel").is_displayed()
                          and d.find_element("id", "cancel"), what="the cancel button")
    button.click()
    d.switch_to.alert.accept()
    browser.wait(lambda d: d.find_element("id", "job-state").text == "CANCELLED", timeout=30,
                 what="CANCELLED")


def test_the_token_is_required_off_the_default_address(browser, web_lab, web_home, tmp_path):
    """127.0.0.2 is loopback too, but not the default bind: serve refuses it without a token,
    and with one every request must carry it (see docs/dashboard.md)."""
    token = "browser-test-token-" + os.urandom(8).hex()
    token_file = tmp_path / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    env = {"WARPFORGE_HOME": str(web_home)}
    inv = str(web_lab["inventory"])
    with pytest.raises(RuntimeError, match="is not the default 127.0.0.1: give --token"):
        Served("--inventory", inv, "--host", "127.0.0.2", env=env)
    s = Served("--inventory", inv, "--host", "127.0.0.2", "--token-file", str(token_file),
               env=env)
    try:
        assert s.url.startswith("http://127.0.0.2:")
        d = browser.driver
        d.delete_all_cookies()
        d.get(s.url)
        assert "token required" in d.find_element("tag name", "body").text
        d.get(s.url + "api/jobs")
        assert "token required" in d.find_element("tag name", "body").text
        d.get(s.url + "?token=" + token)
        browser.wait(lambda d: d.current_url == s.url, what="the token to leave the address")
        browser.wait(lambda d: d.find_element("id", "range").text
                     and d.find_elements("css selector", "#boxes tbody tr"),
                     what="the API through the token cookie")
        assert "error" not in d.find_element("id", "status").get_attribute("class")
        d.delete_all_cookies()
        d.get(s.url)
        assert "token required" in d.find_element("tag name", "body").text
    finally:
        assert s.stop() == 0


def test_screenshot(served, browser, web_lab, tmp_path):
    """The README's picture: the page as the tests left it (a PNG, kept where asked)."""
    d = browser.driver
    d.get(served.url)
    browser.wait(lambda d: len(d.find_elements("css selector", "#jobs tbody tr")) >= 4
                 and d.find_elements("css selector", "#boxes .release"), what="a full page")
    time.sleep(0.5)
    out = Path(os.environ.get("WF_DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(1400, max(800, min(int(height) + 40, 2000)))
    assert d.save_screenshot(str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
