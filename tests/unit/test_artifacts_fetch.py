"""artifacts.fetch's routing against a backend that counts its calls: one fetch_outputs call
per scheduler instance whatever the number of jobs, checks before anything is copied, and a
failing instance that fails only its own jobs. The backends themselves are tested against
the real services in tests/integration/artifacts."""

from __future__ import annotations

import json

import pytest

from tests.testlab import counting
from warpforge_launch import artifacts
from warpforge_launch.errors import InfrastructureError, NotFoundError, UsageError
from warpforge_launch.inputs import parse_inputs
from warpforge_launch.jobs import JobDefinition, JobState
from warpforge_launch.launcher import Launcher
from warpforge_launch.schedulers.base import Scheduler

CALLS: list[tuple[str, list[str]]] = []


@pytest.fixture
def inv(tmp_path, monkeypatch):
    counting.install(monkeypatch)
    CALLS.clear()

    def fetch_outputs(self, stagings):
        CALLS.append((self.name, [st.job_id for st in stagings]))
        if self.config.label == "down":
            raise InfrastructureError(f"{self.name} is unreachable")
        Scheduler.fetch_outputs(self, stagings)  # the documented default: the log only

    monkeypatch.setattr(counting.CountingScheduler, "fetch_outputs", fetch_outputs)
    path = tmp_path / "inv.yaml"
    path.write_text("schedulers:\n  a:\n    type: counting\n  b:\n    type: counting\n"
                    "  c:\n    type: counting\n    label: down\n")
    return str(path)


def submit(launcher, scheduler, n):
    d = JobDefinition(name="m", source="/m.py", inputs=parse_inputs("[(1,8)]"),
                      model_class="M")
    return [launcher.submit(d, scheduler) for _ in range(n)]


def test_one_call_per_instance_and_a_down_instance_fails_only_its_jobs(inv, _private_home):
    with Launcher(inv) as launcher:
        ids = submit(launcher, "a", 3) + submit(launcher, "b", 2) + submit(launcher, "c", 1)
        for j in ids:
            counting.finish(j.split("-", 1)[1])
        got = artifacts.fetch(launcher, ids + ids[:1])  # a repeated id is fetched once
    assert sorted(CALLS) == [("a", ids[:3]), ("b", ids[3:5]), ("c", ids[5:])]
    assert [f.job_id for f in got] == ids
    assert all(f.exit_code == 0 and f.files == 1 for f in got[:5])
    assert got[5].exit_code == 3 and "unreachable" in got[5].error
    m = json.loads((_private_home / "artifacts" / ids[0] / "artifacts.json").read_text())
    assert [f["path"] for f in m["files"]] == ["stdout.log"]
    assert m["scheduler"] == {"instance": "a", "type": "counting"}
    assert m["definition"]["name"] == "m" and m["status"]["state"] == "COMPLETED"
    assert not (_private_home / "artifacts" / ids[5]).exists()


def test_unfinished_or_unknown_jobs_fetch_nothing(inv, _private_home):
    with Launcher(inv) as launcher:
        done, running = submit(launcher, "a", 2)
        counting.finish(done.split("-", 1)[1], JobState.FAILED)
        with pytest.raises(UsageError, match="not finished yet") as err:
            artifacts.fetch(launcher, [done, running])
        assert err.value.exit_code == 2
        with pytest.raises(NotFoundError):
            artifacts.fetch(launcher, [done, "a-999"])
        with pytest.raises(UsageError, match="not a job id"):
            artifacts.fetch(launcher, ["a/../../x"])
    assert CALLS == []
    assert not (_private_home / "artifacts").exists()
