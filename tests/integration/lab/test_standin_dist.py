"""The real stand-in dist (issue #3, 570+ MiB, torch bundled) through distribute and smoke."""

import json

import pytest

from tests.testlab import standin
from warpforge_launch.lab import commands

pytestmark = [pytest.mark.ssh, pytest.mark.torch]


@pytest.fixture(scope="session")
def standin_dist(tmp_path_factory):
    standin.require_torch()
    out = tmp_path_factory.mktemp("standin") / "dist"
    p = standin.build_dist(out)
    assert p.returncode == 0, p.stdout + p.stderr
    return out


def test_standin_dist_lands_runs_and_repushes_for_free(ssh_lab, standin_dist, write_inventory,
                                                       install_dir, tmp_path, capsys):
    inv = write_inventory(names=["nvidia", "amd"])
    junit = tmp_path / "smoke.xml"
    checks = "exists,help,version,trace-example,checksums"  # the stand-in has --version
    rc = commands.smoke(inventory=str(inv), dist=str(standin_dist), checks=checks,
                        junit=str(junit), as_json=True)
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["overall"] == "PASSED", doc
    for box in doc["boxes"]:
        steps = {s["name"]: s for s in box["steps"]}
        assert steps["distribute"]["message"].startswith("pushed")
        assert "stablehlo" in steps["trace-example"]["message"]
        torch_init = ssh_lab.landed(box["box"], f"{install_dir}/releases/{box['release']}"
                                  "/venv/lib/python3.11/site-packages/torch/__init__.py")
        assert torch_init.is_file()
    rc = commands.distribute(inventory=str(inv), dist=str(standin_dist), as_json=True)
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and [r["action"] for r in rows] == ["unchanged", "unchanged"]
    assert sum(r["bytes_sent"] for r in rows) == 0
