"""Host keys: strict by default (unknown and changed keys refused), accept-new records."""

import pytest

from warpforge_launch.lab import releases
from warpforge_launch.lab.remote import HostKeyError, open_session

pytestmark = pytest.mark.ssh


def test_unknown_host_key_is_refused_with_how_to_trust_it(ssh_lab, box, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    b = box("nvidia", known_hosts_file=str(known))
    with pytest.raises(HostKeyError) as err:
        open_session(b)
    msg = str(err.value)
    assert "[127.0.0.21]:2221" in msg and "not in" in msg and "SHA256:" in msg
    assert "ssh-keyscan -p 2221 127.0.0.21" in err.value.hint
    assert "accept-new" in err.value.hint
    assert err.value.exit_code == 2
    assert known.read_text() == ""  # strict mode never writes


def test_missing_known_hosts_file_is_refused_too(box, tmp_path):
    b = box("nvidia", known_hosts_file=str(tmp_path / "nope" / "known_hosts"))
    with pytest.raises(HostKeyError, match="not in"):
        open_session(b)
    assert not (tmp_path / "nope").exists()


def test_wrong_host_key_is_refused(ssh_lab, box, tmp_path):
    known = tmp_path / "known_hosts"
    # amd's key filed under nvidia's address: what a man in the middle would look like
    amd_key = ssh_lab.host_key_line("amd").split(" ", 1)[1]
    known.write_text(f"[127.0.0.21]:2221 {amd_key}\n")
    for policy in ("strict", "accept-new"):
        b = box("nvidia", known_hosts_file=str(known), host_key_policy=policy)
        with pytest.raises(HostKeyError, match="does not match") as err:
            open_session(b)
        assert "ssh-keygen -R '[127.0.0.21]:2221'" in err.value.hint
    assert known.read_text() == f"[127.0.0.21]:2221 {amd_key}\n"


def test_accept_new_records_the_key_then_strict_accepts_it(ssh_lab, box, tmp_path,
                                                          fake_dist):
    known = tmp_path / "ssh" / "known_hosts"
    b = box("amd", known_hosts_file=str(known), host_key_policy="accept-new")
    # the whole push works, including the OpenSSH bulk stream reading the same file
    [r] = releases.distribute([b], fake_dist)
    assert r.ok and r.action == "pushed", r.error
    assert known.read_text().strip() == ssh_lab.host_key_line("amd")
    assert oct(known.stat().st_mode & 0o777) == "0o600"
    strict = box("amd", known_hosts_file=str(known), host_key_policy="strict")
    with open_session(strict) as s:
        assert s.run(["id", "-un"]).out.strip() == "forge"


def test_distribute_reports_host_key_failure_per_box(box, tmp_path, fake_dist):
    known = tmp_path / "known_hosts"
    known.write_text("")
    results = releases.distribute([box("nvidia", known_hosts_file=str(known)), box("amd")],
                                  fake_dist)
    assert [r.ok for r in results] == [False, True]
    assert "not in" in results[0].error and results[0].exit_code == 2
    assert releases.exit_code(results) == 2


@pytest.mark.parametrize("case", ["unknown", "changed"])
def test_smoke_checks_refuse_an_unknown_or_changed_host_key(ssh_lab, box, tmp_path, case):
    """testinfra's ssh:// connection checks the key itself (StrictHostKeyChecking=yes)."""
    from warpforge_launch.lab import smoke
    from warpforge_launch.lab.manifest import Manifest
    from warpforge_launch.lab.remote import Timeouts

    known = tmp_path / "known_hosts"
    amd_key = ssh_lab.host_key_line("amd").split(" ", 1)[1]
    known.write_text("" if case == "unknown" else f"[127.0.0.21]:2221 {amd_key}\n")
    b = box("nvidia", known_hosts_file=str(known))
    verifier = smoke.Verifier([b], Timeouts(connect=5))
    try:
        [check] = smoke.run_checks(verifier.host(b), b, ["exists"], Manifest(()))
    finally:
        verifier.close()
    assert check.status == "FAILED"
    assert check.message == "ssh failed: Host key verification failed.", check.message
    assert known.read_text() == ("" if case == "unknown" else f"[127.0.0.21]:2221 {amd_key}\n")
    good = box("nvidia")  # the lab's own known_hosts: the same check passes
    verifier = smoke.Verifier([good], Timeouts(connect=5))
    try:
        [check] = smoke.run_checks(verifier.host(good), good, ["help"], Manifest(()))
    finally:
        verifier.close()
    assert "Host key verification failed" not in check.message
