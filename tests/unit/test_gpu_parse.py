"""The GPU tools' documented outputs (tests/fixtures/gpu) read into one record per GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from warpforge_launch.lab import gpus

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"


def read(name: str) -> str:
    return (FIX / name).read_text()


def test_nvidia_two_gpus():
    a, b = gpus.parse_nvidia(read("nvidia_two_gpus.csv"), "nv")
    assert a == gpus.Gpu("nv", "NVIDIA", 0, "NVIDIA A100-SXM4-40GB",
                         "GPU-5d8f2c1a-8e0b-7c3d-9a41-2f6b0e1c7a10", "535.104.05", 40960, 1123,
                         37.0, 45.0)
    assert (b.index, b.memory_used_mib, b.utilization_pct, b.temperature_c) == (1, 0, 0.0, 31.0)


def test_nvidia_not_available_values_are_none():
    a, b = gpus.parse_nvidia(read("nvidia_not_available.csv"), "nv")
    assert (a.utilization_pct, a.temperature_c, a.memory_total_mib) == (None, 44.0, 2004)
    assert (b.name, b.utilization_pct, b.temperature_c) == ("Tesla K80", None, None)


def test_nvidia_name_with_a_comma_keeps_the_other_fields():
    line = "0, Weird, Name, GPU-1, 550.1, 100, 5, 1, 30\n"
    (g,) = gpus.parse_nvidia(line, "nv")
    assert (g.name, g.uuid, g.driver, g.memory_total_mib) == ("Weird, Name", "GPU-1", "550.1", 100)


@pytest.mark.parametrize("text", ["0, only, three\n", "x, a, b, c, 1, 2, 3, 4\n"])
def test_nvidia_malformed_line_is_an_error(text):
    with pytest.raises(gpus.GpuParseError, match="nvidia-smi line 1"):
        gpus.parse_nvidia(text, "nv")


def test_rocm_smi_two_cards():
    a, b = gpus.parse_rocm_smi(read("rocm_smi_two_gpus.json"), "amd")
    assert a == gpus.Gpu("amd", "AMD", 0, "AMD Instinct MI210", "0x44b7d8e3c2a1f091", "6.8.5",
                         65520, 10, 12.0, 38.0)
    assert (b.index, b.memory_used_mib, b.utilization_pct, b.temperature_c) == (1, 0, 0.0, 33.0)


def test_rocm_smi_missing_and_na_values():
    (g,) = gpus.parse_rocm_smi(read("rocm_smi_not_available.json"), "amd")
    assert g.name.startswith("Navi 21")  # lower-case labels of older releases
    assert (g.uuid, g.driver, g.memory_used_mib, g.utilization_pct) == (None, None, None, None)
    assert (g.memory_total_mib, g.temperature_c) == (16368, 52.0)  # junction when no edge


def test_rocm_smi_warning_before_json_and_garbage():
    text = "WARNING: one of the values is unsupported\n" + read("rocm_smi_two_gpus.json")
    assert len(gpus.parse_rocm_smi(text, "amd")) == 2
    with pytest.raises(gpus.GpuParseError, match="no JSON"):
        gpus.parse_rocm_smi("ERROR: GPU[0] : not supported", "amd")


def test_amd_smi_three_outputs_joined_by_gpu():
    a, b = gpus.parse_amd_smi(read("amd_smi_list.json"), read("amd_smi_static.json"),
                              read("amd_smi_metric.json"), "amd")
    assert a == gpus.Gpu("amd", "AMD", 0, "AMD Instinct MI300X",
                         "1fff74a1-0000-1000-80d1-7c3f2a9b0e11", "6.8.5", 196592, 283, 3.0, 44.0)
    # N/A activity and used memory; no edge temperature: the hotspot one
    assert (b.utilization_pct, b.memory_used_mib, b.temperature_c) == (None, None, 41.0)


def test_amd_smi_newer_wrapped_form():
    import json

    wrapped = json.dumps({"gpu_data": json.loads(read("amd_smi_metric.json"))})
    (a, _) = gpus.parse_amd_smi(None, read("amd_smi_static.json"), wrapped, "amd")
    assert (a.uuid, a.memory_used_mib) == (None, 283)


def test_script_sections_and_tool_choice():
    out = ("\n@@wf-gpu nvidia-smi\n" + read("nvidia_two_gpus.csv") + "\n@@wf-gpu-exit 0\n")
    tool, found, err = gpus.parse_sections(gpus.split_sections(out), "nv")
    assert (tool, len(found), err) == ("nvidia-smi", 2, None)
    failed = "\n@@wf-gpu nvidia-smi\n" + read("nvidia_driver_failed.txt") + "\n@@wf-gpu-exit 9\n"
    tool, found, err = gpus.parse_sections(gpus.split_sections(failed), "nv")
    assert (tool, found) == ("nvidia-smi", [])
    assert err.startswith("nvidia-smi exited 9: NVIDIA-SMI has failed")
    assert gpus.parse_sections(gpus.split_sections(""), "x") == (None, [], None)


def test_script_runs_here_and_finds_no_tool(tmp_path):
    """The real script under sh, with an empty tool dir and a PATH without vendor tools."""
    import subprocess

    argv = gpus.script_argv("ANY", (str(tmp_path),))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin"}).stdout
    assert gpus.split_sections(out) == {}


def test_script_with_a_double_on_its_tool_path(tmp_path):
    import shlex
    import subprocess

    double = tmp_path / "rocm-smi"
    expected = " ".join(gpus.ROCM_SMI_ARGV[1:])
    double.write_text("#!/bin/sh\n"
                      f'[ "$*" = {shlex.quote(expected)} ] || '
                      '{ echo "bad args: $*" >&2; exit 2; }\n'
                      f"cat {shlex.quote(str(FIX / 'rocm_smi_two_gpus.json'))}\n")
    double.chmod(0o755)
    out = subprocess.run(gpus.script_argv("AMD", (str(tmp_path),)), capture_output=True,
                         text=True, timeout=30, env={"PATH": "/usr/bin:/bin"}).stdout
    tool, found, err = gpus.parse_sections(gpus.split_sections(out), "amd")
    assert (tool, [g.index for g in found], err) == ("rocm-smi", [0, 1], None)


def test_amd_smi_failure_names_the_subcommand():
    out = ("\n@@wf-gpu amd-smi-list\n" + read("amd_smi_list.json") + "\n@@wf-gpu-exit 0\n"
           "\n@@wf-gpu amd-smi-static\nERROR: amdgpu driver not loaded\n@@wf-gpu-exit 1\n"
           "\n@@wf-gpu amd-smi-metric\n[]\n@@wf-gpu-exit 0\n")
    tool, found, err = gpus.parse_sections(gpus.split_sections(out), "amd")
    assert (tool, found) == ("amd-smi", [])
    assert err == "amd-smi static exited 1: ERROR: amdgpu driver not loaded"


def test_output_cut_off_mid_tool_is_not_taken_for_an_answer():
    out = "\n@@wf-gpu nvidia-smi\n" + read("nvidia_two_gpus.csv")  # no exit line
    tool, found, err = gpus.parse_sections(gpus.split_sections(out), "nv")
    assert (tool, found) == ("nvidia-smi", [])
    assert err == "nvidia-smi output was cut off (no exit status)"
