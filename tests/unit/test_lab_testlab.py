"""The lab-control helpers themselves: magic packets, loopback-only boxes and inventories."""

import pytest
import wakeonlan

from tests.testlab import sshboxes


def test_magic_packet_from_wakeonlan_is_recognised():
    pkt = wakeonlan.create_magic_packet("aa:bb:cc:dd:ee:01")
    assert sshboxes.magic_packet_mac(pkt) == "aa:bb:cc:dd:ee:01"


@pytest.mark.parametrize("pkt", [
    b"",
    b"\xff" * 6 + bytes.fromhex("aabbccddee01") * 15,             # one repetition short
    b"\xfe" * 6 + bytes.fromhex("aabbccddee01") * 16,             # bad sync stream
    b"\xff" * 6 + bytes.fromhex("aabbccddee01") * 15 + bytes(6),  # a different 16th copy
])
def test_malformed_magic_packets_are_rejected(pkt):
    assert sshboxes.magic_packet_mac(pkt) is None


def test_box_outside_loopback_is_refused():
    with pytest.raises(ValueError, match="127.0.0.0/8"):
        sshboxes.BoxSpec("x", "192.168.1.20", 22, "aa:bb:cc:dd:ee:ff")


def test_lab_inventory_names_only_loopback(tmp_path):
    lab = sshboxes.SshLab(tmp_path, sshboxes.BOX_SETS["tests"])
    inv = lab.inventory(install_dir="/opt/wf-x")
    assert set(inv["boxes"]) == {"nvidia", "amd", "intel"}
    for box in inv["boxes"].values():
        assert box["address"].startswith("127.0.0.") and box["wol_host"] == "127.0.0.1"
        assert box["install_dir"] == "/opt/wf-x" and box["host_key_policy"] == "strict"
    with pytest.raises(ValueError, match="not loopback"):
        lab.inventory(extra_boxes={"evil": {"address": "10.0.0.5"}})


def test_box_sets_stay_in_the_allocated_range():
    for boxes in sshboxes.BOX_SETS.values():
        for b in boxes:
            last = int(b.address.rsplit(".", 1)[1])
            assert 21 <= last <= 39 and 2221 <= b.port <= 2239
