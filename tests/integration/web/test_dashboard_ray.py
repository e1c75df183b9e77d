"""The dashboard with a Ray head beside the Local scheduler: a Ray job submitted during the
test shows up and turns COMPLETED on the page, refreshed through Ray's batched job list."""

from __future__ import annotations

import json
import shutil
import stat
import sys
import uuid

import pytest

from tests.conftest import lab_unavailable
from tests.helpers import FAKE_SNAKEGRINDER, REPO, model_file
from tests.integration.web.browser import Served
from tests.testlab import ray as raylab
from warpforge_launch.inputs import parse_inputs
from warpforge_launch.jobs import JobDefinition
from warpforge_launch.launcher import Launcher

pytestmark = [pytest.mark.ray, pytest.mark.browser]


@pytest.fixture(scope="module")
def ray_lab(tmp_path_factory, web_home):
    try:
        head = raylab.start_head()  # reused when the lab head already answers
    except raylab.LabError as exc:
        lab_unavailable(str(exc))
    work = raylab.lab_dir() / "work" / f"web-{uuid.uuid4().hex[:8]}"
    (work / "bin").mkdir(parents=True)
    (work / "out").mkdir()
    payload = work / "bin" / "snakegrinder"
    source = (REPO / "tests" / "integration" / "ray" / "fake_snakegrinder.py").read_text()
    payload.write_text(f"#!{sys.executable}\n{source}")
    payload.chmod(payload.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    inv = tmp_path_factory.mktemp("web-ray") / "inventory.yaml"
    inv.write_text(json.dumps({"version": 1, "default_scheduler": "local", "schedulers": {
        "local": {"type": "local", "snakegrinder": str(FAKE_SNAKEGRINDER)},
        "ray": {"type": "ray", "dashboard_url": head.url, "snakegrinder": str(payload),
                "output_root": str(work / "out")}}}))
    s = Served("--inventory", str(inv), "--refresh", "0.5", "--smoke-junit", "",
               env={"WARPFORGE_HOME": str(web_home)})
    yield inv, s
    s.stop()
    shutil.rmtree(work, ignore_errors=True)
    head.stop()  # only when this module started it


def test_a_ray_job_turns_completed_on_the_page(ray_lab, browser, tmp_path):
    inv, served = ray_lab
    with Launcher(str(inv)) as launcher:
        job_id = launcher.submit(JobDefinition(
            name="mlp-on-ray", source=str(model_file(tmp_path)), model_class="SimpleMLP",
            inputs=parse_inputs("[(1, 8)]")), "ray")
    d = browser.driver
    d.get(served.url)
    sel = f'#jobs tr[data-job-id="{job_id}"]'
    browser.wait(lambda d: d.find_elements("css selector", sel), what=f"{job_id} to appear")
    browser.wait(lambda d: d.find_element("css selector", sel + " .state").text == "COMPLETED",
                 timeout=90, what=f"{job_id} to turn COMPLETED")
    assert d.find_element("css selector", sel).find_elements("css selector", "td")[2].text \
        == "ray"
    d.find_element("id", "f-scheduler").send_keys("ray")
    browser.wait(lambda d: all(r.get_attribute("data-job-id").startswith("ray-") for r in
                               d.find_elements("css selector", "#jobs tbody tr")),
                 what="the scheduler filter")
