"""Box objects for the loopback lab boxes (as the inventory would give them)."""

from __future__ import annotations

import types

from tests.testlab.sshboxes import WOL_HOST, SshLab


def lab_box(lab: SshLab, name: str, *, install_dir: str = "/opt/warpforge", **over):
    b = lab.boxes[name]
    fields = dict(name=name, aliases=(), transport="ssh", address=b.address, port=b.port,
                  user=b.user, identity_file=str(lab.client_key),
                  known_hosts_file=str(lab.known_hosts), host_key_policy="strict", mac=b.mac,
                  wol_host=WOL_HOST, wol_port=lab.wol_port, gpu_type="nvidia", gpu_count=1,
                  install_dir=install_dir, groups=("gpu-boxes",))
    fields.update(over)
    return types.SimpleNamespace(**fields)
