"""Suite-wide setup: the loopback-only network guard, and a private WARPFORGE_HOME."""

from __future__ import annotations

import os

import pytest

from tests import netguard

netguard.install()


def pytest_sessionfinish(session, exitstatus):
    if netguard.blocked:
        print(f"\nnetwork guard blocked {len(netguard.blocked)} attempt(s): {netguard.blocked[:5]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _network_guard():
    """A test whose code tried to leave loopback fails, even if it caught the error."""
    before = len(netguard.blocked)
    yield
    new = netguard.blocked[before:]
    if new:
        pytest.fail(f"network guard blocked {len(new)} attempt(s) to leave loopback: {new[:3]}",
                    pytrace=False)


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    """Every test gets its own job store and state dir; the user's real one is never touched."""
    home = tmp_path_factory.mktemp("wfhome")
    monkeypatch.setenv("WARPFORGE_HOME", str(home))
    monkeypatch.delenv("WARPFORGE_INVENTORY", raising=False)
    yield home


def require_lab() -> bool:
    """In CI (.ci/run sets WARPFORGE_REQUIRE_LAB=1) a missing lab component fails, never skips."""
    return os.environ.get("WARPFORGE_REQUIRE_LAB") == "1"


def lab_unavailable(reason: str):
    """Skip loudly on a developer machine, fail in CI."""
    if require_lab():
        pytest.fail(f"lab component unavailable in CI: {reason}")
    pytest.skip(f"LAB COMPONENT UNAVAILABLE: {reason}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say loudly how many tests were skipped and why (a developer machine without the lab
    skips them; CI, with WARPFORGE_REQUIRE_LAB=1, fails instead)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: dict[str, int] = {}
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    terminalreporter.section(f"{len(skipped)} TESTS SKIPPED", sep="!", red=True, bold=True)
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{count:5d}  {reason}", red=True)


@pytest.fixture
def black_hole():
    """The port of a listener that accepts and never answers (tests/testlab/blackhole.py)."""
    from tests.testlab.blackhole import black_hole as hole

    with hole() as port:
        yield port
