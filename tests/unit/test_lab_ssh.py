"""The one SSH connector: options rendered once, values that cannot become options, one
ControlPath per distinct connection. `ssh -G` (which parses and prints, never connects)
reads the rendered config back, so the test sees what OpenSSH itself would use."""

import shutil
import subprocess
from dataclasses import replace

import pytest

from warpforge_launch import ssh
from warpforge_launch.errors import UsageError
from warpforge_launch.inventory import Box

needs_ssh = pytest.mark.skipif(not shutil.which("ssh"), reason="no OpenSSH client")


def resolved(argv_or_config, alias=None) -> dict[str, str]:
    """What OpenSSH makes of our options (`ssh -G` prints the effective config)."""
    if alias is None:
        argv = argv_or_config
        cmd = [argv[0], "-G", *argv[1:-1], argv[-1]] if argv[-2] == "--" else argv
        cmd = [c for c in cmd if c != "--"]
    else:
        cmd = ["ssh", "-G", "-F", str(argv_or_config), alias]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout
    got: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        got.setdefault(key, value)
    return got


@needs_ssh
def test_a_path_with_spaces_and_percent_survives_both_renderings(tmp_path):
    known = str(tmp_path / "my keys %h" / "known hosts")
    ep = ssh.Endpoint("127.0.0.21", 2221, "forge", identity_file=str(tmp_path / "id %u"),
                      known_hosts_file=known)
    on_line = resolved(ssh.argv(ep))
    config = tmp_path / "ssh_config"
    config.write_text(ssh.config_block("wf-box", ep, control=ssh.control_path(tmp_path, ep)))
    in_file = resolved(config, "wf-box")
    for got in (on_line, in_file):
        assert got["userknownhostsfile"] == known
        # -G prints IdentityFile before its % tokens are expanded (at load): still doubled
        assert got["identityfile"] == str(tmp_path / "id %%u")
        assert (got["hostname"], got["port"], got["user"]) == ("127.0.0.21", "2221", "forge")
        assert got["stricthostkeychecking"] == "true" and got["batchmode"] == "yes"
        assert "proxycommand" not in got
    assert in_file["controlpath"] == str(ssh.control_path(tmp_path, ep))


@pytest.mark.parametrize("field, value", [
    ("identity_file", "/k\n  ProxyCommand touch /tmp/pwned"),
    ("known_hosts_file", '/kh" -oProxyCommand="touch /tmp/pwned'),
    ("host", "-oProxyCommand=touch /tmp/pwned"),
    ("host", "box name"),
    ("host", "box\nProxyCommand x"),
    ("user", "-oProxyCommand=x"),
    ("user", "a b"),
    ("port", 0), ("port", 70000), ("port", -1), ("port", "22"),
    ("host_key_policy", "no"),
])
def test_no_inventory_value_can_become_an_option(field, value):
    base = dict(host="127.0.0.21", port=2221, user="forge")
    with pytest.raises(UsageError):
        ssh.Endpoint(**{**base, field: value})


@needs_ssh
def test_accept_new_is_the_only_other_policy(tmp_path):
    ep = ssh.Endpoint("127.0.0.21", 2221, host_key_policy="accept-new")
    assert resolved(ssh.argv(ep))["stricthostkeychecking"] == "accept-new"


def test_control_paths_differ_by_everything_that_makes_a_connection_different(tmp_path):
    ep = ssh.Endpoint("127.0.0.21", 2221, "forge", "/id", "/kh")
    variants = [ep, replace(ep, user="root"), replace(ep, port=2222),
                replace(ep, host="127.0.0.22"), replace(ep, identity_file="/id2"),
                replace(ep, known_hosts_file="/kh2")]
    paths = {ssh.control_path(tmp_path, v) for v in variants}
    assert len(paths) == len(variants)
    assert ssh.control_path(tmp_path, ep) == ssh.control_path(tmp_path, replace(ep))
    assert all(len(str(p)) < 100 for p in paths)  # unix socket path limit


def test_endpoint_of_a_box_expands_home_and_takes_an_override_policy():
    box = Box(name="b", address="127.0.0.30", port=2230, user="forge",
              identity_file="~/id", known_hosts_file="~/kh")
    ep = ssh.Endpoint.of(box, "accept-new")
    assert ep.identity_file.endswith("/id") and not ep.identity_file.startswith("~")
    assert ep.host_key_policy == "accept-new" and ep.key_name == "[127.0.0.30]:2230"
    assert ssh.Endpoint.of(box).host_key_policy == "strict"


def test_the_slurm_login_node_and_the_boxes_share_the_renderer(tmp_path):
    from warpforge_launch.lab.remote import Timeouts, openssh_argv
    from warpforge_launch.schedulers.slurm_transport import SshTransport

    t = SshTransport("127.0.0.40", port=2240, user="u", known_hosts_file="/kh one",
                     control_dir=tmp_path)
    assert '-o' in t.base_argv() and 'UserKnownHostsFile="/kh one"' in t.base_argv()
    with pytest.raises(UsageError):
        SshTransport("login", port=70000, control_dir=tmp_path)
    box = Box(name="b", address="127.0.0.30", port=2230, known_hosts_file="/kh one")
    line = openssh_argv(box, Timeouts(), "true")
    assert 'UserKnownHostsFile="/kh one"' in line and line[-3:] == ["--", "127.0.0.30", "true"]


def test_fan_out_keeps_order_and_bounds_parallelism():
    import threading
    import time

    running, peak, lock = [0], [0], threading.Lock()

    def work(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return i * 2

    assert ssh.fan_out(list(range(10)), work, 3) == [i * 2 for i in range(10)]
    assert peak[0] <= 3
    assert ssh.fan_out([], work, 3) == []
