from pathlib import Path

import pytest

from warpforge_launch import inventory
from warpforge_launch.errors import NotFoundError, UsageError
from warpforge_launch.schedulers.local import LocalConfig

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    p = tmp_path / "inv.yaml"
    p.write_text(text)
    return p


def test_builtin_default_has_local_scheduler_and_box(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    inv = inventory.load(env={})
    assert inv.path is None and inv.default_scheduler == "local"
    assert inv.scheduler().type == "local" and isinstance(inv.scheduler().config, LocalConfig)
    assert inv.boxes["local"].transport == "local"


def test_production_inventory_loads():
    inv = inventory.load(REPO / "inventory.yaml", env={})
    assert {"nuc", "nvidia", "amd"} <= set(inv.boxes)
    assert inv.select_boxes(["mark1amd"])[0].name == "amd"
    assert [b.name for b in inv.select_boxes(["gpu-boxes"])] == ["nvidia", "amd"]
    macs = [b.mac for b in inv.boxes.values() if b.mac]
    assert len(macs) == len(set(macs))  # one MAC per box, in one place


def test_search_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "inventory.yaml").write_text("schedulers: {cwd: {type: local}}\n")
    assert inventory.load(env={}).default_scheduler == "cwd"
    env_file = write(tmp_path, "schedulers: {envsched: {type: local}}\n")
    monkeypatch.setenv("WARPFORGE_INVENTORY", str(env_file))
    assert inventory.load(env={}).default_scheduler == "envsched"
    explicit = tmp_path / "x.yaml"
    explicit.write_text("schedulers: {explicit: {type: local}}\n")
    assert inventory.load(explicit, env={}).default_scheduler == "explicit"


def test_every_error_is_reported_with_its_path(tmp_path):
    p = write(tmp_path, """
schedulers:
  local: {type: local, max_concurrent_jobs: many, colour: blue}
  bad-name: {type: local}
  other: {type: nosuch}
boxes:
  nvidia: {port: notaport, transport: telnet, mac: "zz:zz"}
lab: {wake_timeout: soon}
extra: 1
""")
    with pytest.raises(UsageError) as err:
        inventory.load(p, env={})
    msg = str(err.value)
    for fragment in ("schedulers.local.max_concurrent_jobs", "schedulers.local.colour",
                     "schedulers.bad-name", "schedulers.other.type", "boxes.nvidia.port",
                     "boxes.nvidia.transport", "lab.wake_timeout", "extra: unknown section"):
        assert fragment in msg, fragment
    assert "\n" not in msg


def test_two_local_instances_in_one_work_dir_are_refused(tmp_path, monkeypatch):
    """They would list, and count against their limits, each other's jobs."""
    monkeypatch.setenv("WARPFORGE_HOME", str(tmp_path / "home"))
    shared = tmp_path / "jobs"
    p = write(tmp_path, f"""
schedulers:
  local: {{type: local, work_dir: {shared}}}
  one: {{type: local, work_dir: {shared}/}}
  two: {{type: local, work_dir: {tmp_path}/home/local/three}}
  three: {{type: local}}
  four: {{type: local}}
""")
    with pytest.raises(UsageError) as err:
        inventory.load(p, env={})
    msg = str(err.value)
    assert f"schedulers.one.work_dir: {shared} is also the work dir of scheduler 'local'" in msg
    assert "schedulers.three.work_dir" in msg and "scheduler 'two'" in msg
    assert "2 errors" in msg and "four" not in msg
    p.write_text("schedulers: {local: {type: local}, one: {type: local}}\n")
    assert set(inventory.load(p, env={}).schedulers) == {"local", "one"}


def test_bad_yaml_names_the_line(tmp_path):
    p = write(tmp_path, "schedulers:\n  local: {type: local\n")
    with pytest.raises(UsageError, match=r"not valid YAML at line \d+"):
        inventory.load(p, env={})


def test_a_duplicate_key_names_the_key_and_line(tmp_path):
    """A key given twice is refused (it would silently replace the first), in YAML or JSON."""
    p = write(tmp_path, "schedulers:\n  local: {type: local}\n  local: {type: ray}\n")
    with pytest.raises(UsageError, match=r"not valid YAML at line 3, column 3: "
                                         r"duplicate key 'local' \(first at line 2\)$"):
        inventory.load(p, env={})
    p.write_text('{"schedulers": {"local": {"type": "local", "type": "ray"}}}')
    with pytest.raises(UsageError, match="duplicate key 'type'"):
        inventory.load(p, env={})


def test_missing_and_non_mapping(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        inventory.load(tmp_path / "nope.yaml", env={})
    with pytest.raises(UsageError, match="must be a mapping"):
        inventory.load(write(tmp_path, "- a\n- b\n"), env={})


def test_duplicate_mac_and_alias(tmp_path):
    p = write(tmp_path, """
boxes:
  a: {mac: "aa:bb:cc:dd:ee:01", aliases: [x]}
  b: {mac: "AA:BB:CC:DD:EE:01", aliases: [x]}
""")
    with pytest.raises(UsageError) as err:
        inventory.load(p, env={})
    assert "given to several boxes" in str(err.value) and "'x' is also used" in str(err.value)


def test_default_scheduler_must_exist(tmp_path):
    p = write(tmp_path, "default_scheduler: ray\nschedulers: {local: {type: local}}\n")
    with pytest.raises(UsageError, match="default_scheduler: 'ray' is not among"):
        inventory.load(p, env={})


def test_env_overrides():
    inv = inventory.load(REPO / "inventory.yaml", env={
        "NVIDIA_HOST_OVERRIDE": "127.0.0.21", "AMD_HOST_OVERRIDE": "127.0.0.22",
        "INSTALL_DIR_OVERRIDE": "/tmp/wf", "WAKE_BOXES": "0", "SKIP_IF_UNREACHABLE": "0",
        "DIST_DIR_OVERRIDE": "/tmp/dist"})
    assert inv.boxes["nvidia"].host == "127.0.0.21" and inv.boxes["amd"].host == "127.0.0.22"
    assert {b.install_dir for b in inv.boxes.values()} == {"/tmp/wf"}
    assert not inv.lab.wake_boxes and not inv.lab.skip_if_unreachable
    assert inv.build.dist_dir == "/tmp/dist"


def test_bad_override_values(tmp_path):
    with pytest.raises(UsageError, match="WAKE_BOXES must be 0 or 1"):
        inventory.load(REPO / "inventory.yaml", env={"WAKE_BOXES": "yes"})
    p = write(tmp_path, "schedulers: {local: {type: local}}\n")
    with pytest.raises(UsageError, match="no box called 'nvidia'"):
        inventory.load(p, env={"NVIDIA_HOST_OVERRIDE": "h"})


def test_selectors():
    inv = inventory.load(REPO / "inventory.yaml", env={})
    assert len(inv.select_boxes([])) == len(inv.boxes)
    with pytest.raises(NotFoundError, match="'gpu-box'"):
        inv.select_boxes(["gpu-box"])
    with pytest.raises(NotFoundError, match="no scheduler 'nope'"):
        inv.scheduler("nope")


def test_login_box_fills_the_ssh_settings(tmp_path):
    p = write(tmp_path, """
schedulers:
  hpc: {type: slurm, login: head, login_user: alice}
  bad: {type: slurm, login: nobox}
boxes:
  head: {address: 127.0.0.41, port: 2241, user: forge, known_hosts_file: /k, identity_file: /i}
""")
    with pytest.raises(UsageError, match="schedulers.bad.login: no box 'nobox'"):
        inventory.load(p, env={})
    p.write_text(p.read_text().replace("  bad: {type: slurm, login: nobox}\n", ""))
    cfg = inventory.load(p, env={}).scheduler("hpc").config
    assert (cfg.login_host, cfg.login_port, cfg.known_hosts_file, cfg.identity_file) == (
        "127.0.0.41", 2241, "/k", "/i")
    assert cfg.login_user == "alice"  # set in the scheduler's own section: it wins


def test_lab_logs_live_under_warpforge_home(tmp_path, monkeypatch):
    from warpforge_launch import inventory as inv_mod
    from warpforge_launch.store import home

    monkeypatch.setenv("WARPFORGE_HOME", str(tmp_path / "state"))
    p = tmp_path / "inv.yaml"
    p.write_text("schedulers: {local: {type: local}}\n")
    assert inv_mod.load(p, env={}).lab.log_root == str(tmp_path / "state" / "logs")
    assert home() == tmp_path / "state"


def test_ports_and_waits_out_of_range_are_errors_with_their_path(tmp_path):
    p = write(tmp_path, """
boxes:
  nvidia: {port: 70000, wol_port: -1}
  amd: {port: 0}
lab: {wake_timeout: .nan, connect_timeout: .inf, lock_wait: -1, parallel: 0,
      keep_releases: 1}
""")
    with pytest.raises(UsageError) as err:
        inventory.load(p, env={})
    msg = str(err.value)
    for fragment in ("boxes.nvidia.port: 70000 is not a port number",
                     "boxes.nvidia.wol_port: -1", "boxes.amd.port: 0", "lab.wake_timeout",
                     "lab.connect_timeout", "lab.lock_wait", "lab.parallel",
                     "lab.keep_releases"):
        assert fragment in msg, fragment
    assert err.value.exit_code == 2


def test_an_unknown_section_is_an_error(tmp_path):
    with pytest.raises(UsageError, match="runners: unknown section"):
        inventory.load(write(tmp_path, "runners: {x: 1}\n"), env={})
