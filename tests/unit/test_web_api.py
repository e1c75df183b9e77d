"""The dashboard's JSON API through Starlette's TestClient, on real Local jobs.

Jobs run for real (the Local scheduler with the fake snakegrinder); the refresher is driven
by hand (refresh_interval=0) so each test decides when a refresh cycle happens.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from tests.helpers import local_inventory, model_file  # noqa: E402
from warpforge_launch.inputs import parse_inputs  # noqa: E402
from warpforge_launch.jobs import JobDefinition, JobState  # noqa: E402
from warpforge_launch.launcher import Launcher  # noqa: E402
from warpforge_launch.schedulers.local import LocalScheduler  # noqa: E402
from warpforge_launch.web import jobs as web_jobs  # noqa: E402
from warpforge_launch.web.app import Settings, create_app  # noqa: E402

BASE = "http://127.0.0.1:8700"


@pytest.fixture
def inv(tmp_path) -> Path:
    return local_inventory(tmp_path / "inventory.yaml")


@pytest.fixture
def model(tmp_path) -> Path:
    return model_file(tmp_path)


def client_for(inv: Path, tmp_path: Path, **settings) -> TestClient:
    base_url = settings.pop("base_url", BASE)
    settings.setdefault("refresh_interval", 0)
    settings.setdefault("smoke_junit", tmp_path / "no-report.xml")
    return TestClient(create_app(Settings(inventory=str(inv), **settings)), base_url=base_url)


def submit(inv: Path, model: Path, name="mlp", env=None, **kw) -> str:
    with Launcher(str(inv)) as launcher:
        return launcher.submit(JobDefinition(
            name=name, source=str(model), model_class="SimpleMLP",
            inputs=parse_inputs("[(1, 8)]"), environment=env or {}, **kw))


def wait_done(inv: Path, job_id: str, timeout=30.0) -> JobState:
    """Wait on the backend itself, leaving the store's row as it was (stale)."""
    with Launcher(str(inv)) as launcher:
        sched = launcher.scheduler("local")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = sched.status(job_id).state
            if state.terminal:
                return state
            time.sleep(0.05)
    raise AssertionError(f"{job_id} did not finish")


def test_page_and_assets_are_served_with_safe_headers(inv, tmp_path):
    with client_for(inv, tmp_path) as c:
        page = c.get("/")
        assert page.status_code == 200 and "<table id=\"jobs\"" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["server-timing"].startswith("app;dur=")
        for asset in ("/static/app.js", "/static/style.css"):
            r = c.get(asset)
            assert r.status_code == 200 and r.text
            assert "http://" not in r.text and "https://" not in r.text  # no CDN, nothing remote
        script = c.get("/static/app.js").text
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in script  # data reaches the page as text only
        assert "http" not in page.text.replace("http-equiv", "")


def test_meta_lists_schedulers_and_read_only(inv, tmp_path):
    with client_for(inv, tmp_path) as c:
        m = c.get("/api/meta").json()
    assert m["schedulers"] == ["local"] and m["allow_cancel"] is False
    assert "COMPLETED" in m["states"]


def test_jobs_list_filters_pages_and_refreshes_in_one_call_per_instance(
        inv, model, tmp_path, monkeypatch):
    ids = [submit(inv, model, name=f"job{i}") for i in range(3)]
    for job_id in ids:
        assert wait_done(inv, job_id) is JobState.COMPLETED
    calls = []
    real, real_status = LocalScheduler.statuses, LocalScheduler.status

    def counting(self, job_ids):
        calls.append(sorted(job_ids))
        return real(self, job_ids)

    monkeypatch.setattr(LocalScheduler, "statuses", counting)
    monkeypatch.setattr(LocalScheduler, "status", lambda self, j: pytest.fail("status per job"))
    with client_for(inv, tmp_path) as c:
        before = c.get("/api/jobs").json()
        assert before["total"] == 3 and {j["state"] for j in before["jobs"]} == {"PENDING"}
        assert [j["job_id"] for j in before["jobs"]] == ids[::-1]  # newest first
        monkeypatch.setattr(LocalScheduler, "status", real_status)  # statuses() may use it
        c.app.state.refresher.cycle()
        assert calls == [sorted(ids)]  # one batched call for the three jobs
        after = c.get("/api/jobs").json()
        assert {j["state"] for j in after["jobs"]} == {"COMPLETED"}
        assert after["refreshed_at"] and after["backend_errors"] == {}
        c.app.state.refresher.cycle()
        assert len(calls) == 1  # nothing active: no backend call at all
        page = c.get("/api/jobs", params={"limit": 2, "offset": 1}).json()
        assert [j["job_id"] for j in page["jobs"]] == [ids[1], ids[0]] and page["total"] == 3
        assert c.get("/api/jobs?state=completed,failed").json()["total"] == 3
        assert c.get("/api/jobs?state=FAILED").json()["total"] == 0
        assert c.get("/api/jobs?scheduler=local").json()["total"] == 3
        assert c.get("/api/jobs?scheduler=ray").json()["jobs"] == []


def test_the_refresher_thread_updates_states_without_being_asked(inv, model, tmp_path):
    job_id = submit(inv, model)
    wait_done(inv, job_id)
    with client_for(inv, tmp_path, refresh_interval=0.1) as c:  # lifespan starts the thread
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            [job] = c.get("/api/jobs").json()["jobs"]
            if job["state"] == "COMPLETED":
                break
            time.sleep(0.05)
        assert job["state"] == "COMPLETED"
        refresher = c.app.state.refresher
    assert refresher.cycles >= 1 and refresher._thread is None  # stopped with the app


@pytest.mark.parametrize("query,fragment", [
    ("state=DONE", "unknown state 'DONE'"), ("limit=0", "limit must be within 1-500"),
    ("limit=501", "limit must be within 1-500"), ("limit=x", "limit must be an integer"),
    ("offset=-1", "offset must be >= 0"),
])
def test_jobs_list_bad_input_is_400(inv, tmp_path, query, fragment):
    with client_for(inv, tmp_path) as c:
        r = c.get("/api/jobs?" + query)
    assert r.status_code == 400 and fragment in r.json()["error"]


def test_a_broken_backend_is_reported_and_the_others_still_refresh(inv, model, tmp_path):
    from warpforge_launch import codec
    from warpforge_launch.jobs import JobStatus, utcnow
    from warpforge_launch.schedulers.ray import RayConfig
    from warpforge_launch.store import JobRecord, JobStore

    job_id = submit(inv, model)
    wait_done(inv, job_id)
    # a Ray job of a cluster that is gone: nothing listens on its dashboard port
    config = codec.to_jsonable(RayConfig(dashboard_url="http://127.0.0.1:9", connect_timeout=1))
    JobStore().add(JobRecord("ray-wf-gone", "ray", "ray", "wf-gone", "c", "old", "me", utcnow(),
                             {}, {}, config, JobStatus("ray-wf-gone", "c", JobState.RUNNING)))
    with client_for(inv, tmp_path) as c:
        c.app.state.refresher.cycle()
        data = c.get("/api/jobs").json()
    states = {j["job_id"]: j["state"] for j in data["jobs"]}
    assert states == {job_id: "COMPLETED", "ray-wf-gone": "RUNNING"}
    assert "127.0.0.1:9" in data["backend_errors"]["ray"]


def test_job_detail_result_and_secret_env_names_only(inv, model, tmp_path, monkeypatch):
    monkeypatch.setenv("WF_TEST_SECRET", "s3cr3t-value-never-shown")
    job_id = submit(inv, model, env={"PLAIN": "visible"}, secret_env=("WF_TEST_SECRET",),
                    timeout=timedelta(minutes=5))
    wait_done(inv, job_id)
    with client_for(inv, tmp_path) as c:
        c.app.state.refresher.cycle()
        r = c.get(f"/api/jobs/{job_id}")
        logs = c.get(f"/api/jobs/{job_id}/logs")
        listing = c.get("/api/jobs")
    assert r.status_code == 200
    d = r.json()
    assert d["definition"]["secret_env"] == ["WF_TEST_SECRET"]
    assert d["definition"]["environment"] == {"PLAIN": "visible"}
    assert d["definition"]["timeout"] == 300
    for text in (r.text, logs.text, listing.text):
        assert "s3cr3t-value" not in text
    assert [e["event"] for e in d["timeline"]][0] == "submitted"
    assert d["timeline"][-1]["event"] == "COMPLETED"
    assert d["plan"]["kind"] == "local-process" and d["plan"]["argv"]
    res = d["result"]
    assert res["success"] is True and "stablehlo" in res["mlir_head"]
    assert any(a.endswith("model.mlir") for a in res["artifacts"])
    assert d["can_cancel"] is False


def test_unknown_job_is_404_everywhere(inv, tmp_path):
    with client_for(inv, tmp_path, allow_cancel=True) as c:
        for r in (c.get("/api/jobs/local-nope"), c.get("/api/jobs/local-nope/logs"),
                  c.post("/api/jobs/local-nope/cancel", headers={"X-Warpforge-Action": "cancel"})):
            assert r.status_code == 404 and "local-nope" in r.json()["error"]


def test_bad_ids_and_unknown_api_paths_answer_json(inv, tmp_path):
    long_id = "local-" + "a" * 300
    with client_for(inv, tmp_path, allow_cancel=True) as c:
        for r in (c.get(f"/api/jobs/{long_id}"), c.get(f"/api/jobs/{long_id}/logs"),
                  c.post(f"/api/jobs/{long_id}/cancel",
                         headers={"X-Warpforge-Action": "cancel"})):
            assert r.status_code == 400 and "is not a job id" in r.json()["error"]
        r = c.get("/api/nosuch")
        assert r.status_code == 404 and r.json() == {"error": "Not Found"}
        r = c.get("/api/jobs/local-x/cancel")  # cancel is POST only
        assert r.status_code == 405 and "error" in r.json()
        assert c.get("/nosuch").status_code == 404


def test_logs_follow_by_offset_and_first_read_is_a_tail(inv, model, tmp_path, monkeypatch):
    job_id = submit(inv, model, env={"WF_FAKE_STDERR": "x" * 300})
    wait_done(inv, job_id)
    with client_for(inv, tmp_path) as c:
        c.app.state.refresher.cycle()
        full = c.get(f"/api/jobs/{job_id}/logs").json()
        assert full["done"] is True and "x" * 300 in full["text"] and not full["truncated"]
        assert c.get(f"/api/jobs/{job_id}/logs?offset={full['offset']}").json()["text"] == ""
        part = c.get(f"/api/jobs/{job_id}/logs?offset={full['offset'] - 10}").json()
        assert part["text"] == full["text"][-10:]
        assert c.get(f"/api/jobs/{job_id}/logs?offset=-3").status_code == 400
        monkeypatch.setattr(web_jobs, "LOG_TAIL_CHARS", 50)
        tail = c.get(f"/api/jobs/{job_id}/logs").json()
        assert tail["truncated"] and tail["text"] == full["text"][-50:]


def test_logs_of_a_running_job_are_not_done(inv, model, tmp_path):
    job_id = submit(inv, model, env={"WF_FAKE_SLEEP": "30", "WF_FAKE_STDERR": "working"})
    try:
        with client_for(inv, tmp_path) as c:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                c.app.state.refresher.cycle()
                data = c.get(f"/api/jobs/{job_id}/logs").json()
                if "working" in data["text"]:
                    break
                time.sleep(0.1)
            assert "working" in data["text"] and data["done"] is False
            assert c.get(f"/api/jobs/{job_id}").json()["result"] is None
    finally:
        with Launcher(str(inv)) as launcher:
            launcher.cancel(job_id)


def test_cancel_is_refused_unless_allowed_and_needs_the_header(inv, model, tmp_path):
    job_id = submit(inv, model, env={"WF_FAKE_SLEEP": "30"})
    try:
        with client_for(inv, tmp_path) as c:
            r = c.post(f"/api/jobs/{job_id}/cancel", headers={"X-Warpforge-Action": "cancel"})
            assert r.status_code == 403 and "--allow-cancel" in r.json()["error"]
            assert c.get(f"/api/jobs/{job_id}/cancel").status_code == 405
        with client_for(inv, tmp_path, allow_cancel=True) as c:
            assert c.get(f"/api/jobs/{job_id}").json()["can_cancel"] is True
            r = c.post(f"/api/jobs/{job_id}/cancel")  # what a cross-site form could send
            assert r.status_code == 403 and "X-Warpforge-Action" in r.json()["error"]
            r = c.post(f"/api/jobs/{job_id}/cancel", headers={"X-Warpforge-Action": "cancel"})
            assert r.status_code == 200, r.text
            assert r.json()["cancelled"] is True and r.json()["state"] == "CANCELLED"
            again = c.post(f"/api/jobs/{job_id}/cancel",
                           headers={"X-Warpforge-Action": "cancel"}).json()
            assert again["cancelled"] is False and again["state"] == "CANCELLED"
            assert c.get(f"/api/jobs/{job_id}").json()["can_cancel"] is False
    finally:
        with Launcher(str(inv)) as launcher:
            launcher.cancel(job_id)


TOKEN = "t0ken-for-the-tests-0123456789"


def test_token_is_required_on_every_request_when_set(inv, tmp_path):
    with client_for(inv, tmp_path, token=TOKEN, host="127.0.0.2",
                    base_url="http://127.0.0.2:8700") as c:
        for path in ("/", "/static/app.js", "/api/jobs", "/api/boxes", "/api/meta"):
            r = c.get(path)
            assert r.status_code == 401, path
        assert "token required" in c.get("/api/jobs").json()["error"]
        assert c.get("/api/jobs", headers={"Authorization": "Bearer wrong-token-000000"}
                     ).status_code == 401
        assert c.get("/api/jobs?token=" + TOKEN).status_code == 401  # API: header or cookie
        assert c.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/api/jobs", headers={"X-Warpforge-Token": TOKEN}).status_code == 200
        assert c.get("/?token=wrong").status_code == 401
        first = c.get(f"/?token={TOKEN}&x=1", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/?x=1"
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert c.get("/").status_code == 200  # the client kept the cookie
        assert c.get("/api/jobs").status_code == 200
        c.cookies.clear()
        assert c.get("/api/jobs").status_code == 401


def test_without_a_token_only_loopback_host_headers_are_served(inv, tmp_path):
    with client_for(inv, tmp_path) as c:
        assert c.get("/api/meta", headers={"Host": "localhost:8700"}).status_code == 200
        r = c.get("/api/meta", headers={"Host": "attacker.example:8700"})
        assert r.status_code == 421 and "Host" in r.json()["error"]
