"""When the one-probe answer for an unchanged box may be used at all."""

import shutil

import pytest

from warpforge_launch.inventory import Box
from warpforge_launch.lab import noopcheck
from warpforge_launch.lab.releases import Options

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the ssh client")


def box(**over):
    return Box(**{"name": "b", "address": "127.0.0.21", "port": 2221, **over})


@pytest.mark.parametrize("b,opts,usable", [
    (box(), Options(), True),
    (box(transport="local"), Options(), False),
    (box(host_key_policy="accept-new"), Options(), False),
    (box(), Options(host_key_policy="accept-new"), False),
    (box(), Options(verify_all=True), False),
    (box(), Options(repair=True), False),
    (box(), Options(bulk="paramiko"), False),
])
def test_only_strict_openssh_without_full_verification(b, opts, usable):
    assert noopcheck.usable(b, opts) is usable


def test_the_probe_prefers_a_classic_key_exchange_and_keeps_the_defaults():
    from warpforge_launch import ssh

    line = ssh.argv(ssh.Endpoint("127.0.0.1"), "true", kex_first=noopcheck._PROBE_KEX)
    assert "KexAlgorithms=^curve25519-sha256,curve25519-sha256@libssh.org" in line
