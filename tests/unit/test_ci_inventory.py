"""The inventory's ci section: strict validation, with every error's field path."""

from __future__ import annotations

import pytest

from warpforge_launch import inventory
from warpforge_launch.errors import UsageError
from warpforge_launch.jobs import GpuType


def _doc(ci: dict) -> dict:
    doc = inventory.default_document()
    doc["boxes"].update({"nvidia": {"address": "127.0.0.21", "gpu_type": "NVIDIA"},
                         "amd": {"address": "127.0.0.22", "gpu_type": "AMD"}})
    doc["ci"] = ci
    return doc


def test_defaults_and_a_full_section():
    inv = inventory.parse(_doc({}), None, {})
    assert inv.ci.boxes == () and inv.ci.power_off == ("sudo", "systemctl", "poweroff")
    inv = inventory.parse(_doc({
        "boxes": [{"box": "nvidia"}, {"box": "amd", "depends_on": ["nvidia"]}],
        "repository": "git@github.com:morrismeyer/warpforge.git", "branch": "main",
        "remote_dir": "/home/actions/warpforge", "build": ["./gradlew", "assemble"],
        "test_floors": {"warpforge-core": 100},
        "gpu_tests": {"NVIDIA": ["./gradlew", "nvidiaTest"], "AMD": ["./gradlew", "amdTest"]},
        "power_off": ["sudo", "poweroff"], "log_root": "/var/log/wf",
        "timeouts": {"build": 60, "power_off": 5}}), None, {})
    ci = inv.ci
    assert [b.box for b in ci.boxes] == ["nvidia", "amd"]
    assert ci.boxes[1].depends_on == ("nvidia",)
    assert ci.gpu_tests[GpuType.AMD] == ("./gradlew", "amdTest")
    assert ci.timeouts.build == 60 and ci.timeouts.sync == 600


@pytest.mark.parametrize("ci, expected", [
    ({"boxes": [{"box": "intel"}], "repository": "x"}, "ci.boxes.0.box: no box 'intel'"),
    ({"boxes": [{"box": "amd", "depends_on": ["nvidia"]}, {"box": "nvidia"}], "repository": "x"},
     "ci.boxes.0.depends_on: 'nvidia' must be a box listed before 'amd'"),
    ({"boxes": [{"box": "amd"}, {"box": "amd"}], "repository": "x"},
     "ci.boxes.1.box: 'amd' is listed twice"),
    ({"boxes": [{"box": "amd"}]}, "ci.repository: required"),
    ({"build": []}, "ci.build: must be a non-empty argv list"),
    ({"power_off": "sudo poweroff"}, "ci.power_off"),
    ({"gpu_tests": {"ANY": ["x"]}}, "ci.gpu_tests.ANY: only NVIDIA and AMD"),
    ({"gpu_tests": {"INTEL": ["x"]}}, "ci.gpu_tests.INTEL"),
    ({"timeouts": {"test": 0}}, "ci.timeouts.test: must be positive"),
    ({"timeouts": {"tset": 1}}, "ci.timeouts.tset"),
    ({"test_floors": {"core": "many"}}, "ci.test_floors.core"),
    ({"box_order": []}, "ci.box_order"),
])
def test_bad_ci_sections_are_refused_with_the_field(ci, expected):
    with pytest.raises(UsageError) as e:
        inventory.parse(_doc(ci), None, {})
    assert expected in str(e.value)


def test_the_lab_inventory_orders_nvidia_before_amd():
    from pathlib import Path

    inv = inventory.load(Path(__file__).resolve().parents[2] / "inventory.yaml", env={})
    assert [(b.box, b.depends_on) for b in inv.ci.boxes] == [("nvidia", ()),
                                                             ("amd", ("nvidia",))]
    assert set(inv.ci.gpu_tests) == {GpuType.NVIDIA, GpuType.AMD}
