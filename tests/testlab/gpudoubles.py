"""Test doubles of the vendors' GPU tools for the sshd boxes (no real GPU exists here).

A double checks it was called with the documented arguments gpu-info uses and prints an
output captured in the vendor's documented format (tests/fixtures/gpu, see its README);
any other arguments are a usage error (exit 2), so a changed query fails the tests.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from warpforge_launch.lab import gpus

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
NVIDIA_ARGS = " ".join(gpus.NVIDIA_ARGV[1:])
ROCM_ARGS = " ".join(gpus.ROCM_SMI_ARGV[1:])
AMD_ARGS = {k: " ".join(v[1:]) for k, v in gpus.AMD_SMI_ARGVS.items()}


def double(tool: str, answers: dict[str, tuple[str, int]]) -> str:
    """A shell script standing in for `tool`: for each expected argument string it prints a
    fixture's text and exits with the given status."""
    lines = ["#!/bin/sh", f"# test double of {tool}: outputs in the vendor's documented format",
             'case "$*" in']
    for args, (fixture, status) in answers.items():
        text = (FIXTURES / fixture).read_text()
        if "WF_FIXTURE_END" in text:
            raise ValueError(f"{fixture} holds the here-document delimiter")
        lines += [f"{shlex.quote(args)})", "cat <<'WF_FIXTURE_END'", text.rstrip("\n"),
                  "WF_FIXTURE_END", f"exit {status} ;;"]
    lines += [f'*) echo "{tool} double: unexpected arguments: $*" >&2; exit 2 ;;', "esac", ""]
    return "\n".join(lines)


def nvidia(fixture: str = "nvidia_two_gpus.csv", status: int = 0) -> str:
    return double("nvidia-smi", {NVIDIA_ARGS: (fixture, status)})


def rocm(fixture: str = "rocm_smi_two_gpus.json") -> str:
    return double("rocm-smi", {ROCM_ARGS: (fixture, 0)})


def amd_smi() -> str:
    return double("amd-smi", {AMD_ARGS["amd-smi-list"]: ("amd_smi_list.json", 0),
                              AMD_ARGS["amd-smi-static"]: ("amd_smi_static.json", 0),
                              AMD_ARGS["amd-smi-metric"]: ("amd_smi_metric.json", 0)})


def install(lab, box: str, bindir: str, tool: str, script: str) -> None:
    """Put a double into the box's own /opt, through the box (its overlay is live)."""
    lab.ssh(box, "sh", "-c", 'mkdir -p -- "$1" && printf %s "$2" > "$1/$3" && chmod 755 "$1/$3"',
            "wf-install", bindir, script, tool)
