"""Inventory boxes for the loopback lab boxes, loaded through the real inventory loader."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.testlab.sshboxes import SshLab
from warpforge_launch import inventory


def lab_inventory(lab: SshLab, path: Path | None = None, *, env: dict | None = None, **kw):
    """Write a loopback lab inventory (YAML) and load it as a user's command would."""
    if path is None:
        with tempfile.TemporaryDirectory(prefix="wf-inv-") as tmp:
            return lab_inventory(lab, Path(tmp) / "inventory.yaml", env=env, **kw)
    lab.write_inventory(path, **kw)
    return inventory.load(path, env=env or {})


def lab_box(lab: SshLab, name: str, *, install_dir: str = "/opt/warpforge", **over):
    import dataclasses

    box = lab_inventory(lab, install_dir=install_dir, names=[name]).boxes[name]
    return dataclasses.replace(box, **over) if over else box
