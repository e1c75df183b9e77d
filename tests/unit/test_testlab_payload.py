"""The one fake payload obeys its WF_FAKE_* convention (so every backend's tests can rely on
it) and records what it received."""

import os
import signal
import subprocess
import sys
import time

from tests.testlab.payload import FAKE_SNAKEGRINDER, behaviour, log_value, record


def run(tmp_path, *extra, env=None, **kw):
    argv = [str(FAKE_SNAKEGRINDER), "--trace-with-values", "--source", __file__, "--inputs",
            "[(1, 8, 'f32')]", "--out", str(tmp_path / "out"), *extra]
    return subprocess.run(argv, env={**os.environ, **(env or {})}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=30, **kw)


def test_records_argv_env_and_cwd(tmp_path):
    target = tmp_path / "seen.json"
    proc = run(tmp_path, env={"WF_USER_X": "it's $(x)",
                              **behaviour(stdout="hello", record=target)})
    assert proc.returncode == 0 and "SUCCESS: traced" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json",
                                                                     "model.mlir"]
    seen = record(target)
    assert seen["argv"][seen["argv"].index("--inputs") + 1] == "[(1, 8, 'f32')]"
    assert seen["env"]["WF_USER_X"] == "it's $(x)" and seen["cwd"] == str(tmp_path)
    assert log_value(proc.stdout, "USER_ENV") == {"WF_USER_X": "it's $(x)"}
    assert "hello" in proc.stdout.splitlines()
    assert "stablehlo.return" in (tmp_path / "out" / "model.mlir").read_text()


def test_fails_as_told(tmp_path):
    proc = run(tmp_path, env=behaviour(exit=3, stderr="relu6 is not supported"))
    assert proc.returncode == 3 and "relu6 is not supported" in proc.stderr
    assert proc.stdout.splitlines()[-1] == "FAILED: relu6 is not supported"
    proc = run(tmp_path, env=behaviour(exit=4))
    assert proc.stdout.splitlines()[-1] == "FAILED: fake failure with exit code 4"


def test_unknown_option_and_placeholder_source(tmp_path):
    assert run(tmp_path, "--version").returncode == 2
    proc = subprocess.run([str(FAKE_SNAKEGRINDER), "--source", str(tmp_path / "no.py")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and log_value(proc.stdout, "SOURCE") is None


def test_ignores_sigterm_when_told(tmp_path):
    argv = [sys.executable, str(FAKE_SNAKEGRINDER), "--out", str(tmp_path / "o")]
    proc = subprocess.Popen(argv, env={**os.environ, **behaviour(sleep=30, ignore_term=True)},
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("fake-snakegrinder on ")
        while "tracing" not in proc.stdout.readline():
            pass
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None, "SIGTERM ended a payload told to ignore it"
    finally:
        proc.kill()
        proc.wait()
