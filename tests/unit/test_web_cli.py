"""`warpforge-launch serve`: bad input is one line and exit 2; a real process serves and stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.helpers import REPO, local_inventory
from warpforge_launch.cli import main

TOKEN = "a-token-of-the-right-length-42"


def run(capsys, *argv):
    code = main(["serve", *argv])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("argv,fragment", [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 is not the default 127.0.0.1: give --token"),
    (["--host", "127.0.0.2"], "--host 127.0.0.2 is not the default 127.0.0.1"),
    (["--host", "example.org", "--token", TOKEN], "--host 'example.org' is not an IP address"),
    (["--token", "short"], "the token must be 16-512 characters"),
    (["--token", "has space in it, 16+ chars"], "the token must be 16-512 characters"),
    (["--token", TOKEN, "--token-file", "x"], "not allowed with argument"),
    (["--token-file", "/nonexistent/token"], "No such file or directory"),
    (["--port", "70000"], "--port must be within 0-65535"),
    (["--refresh", "0"], "--refresh must be within 0.2-3600"),
    (["--port", "x"], "invalid int value"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, fragment):
    code, err = run(capsys, *argv)
    assert code == 2
    assert fragment in err and "Traceback" not in err
    assert err.startswith("error: ")


def test_token_file_readable_by_others_is_refused(capsys, tmp_path):
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    f.chmod(0o644)
    code, err = run(capsys, "--host", "127.0.0.2", "--token-file", str(f))
    assert code == 2 and "readable by others" in err and "chmod 600" in err


def test_bad_inventory_is_refused_before_listening(capsys, tmp_path):
    bad = tmp_path / "inv.yaml"
    bad.write_text("schedulers: [\n")
    code, err = run(capsys, "--inventory", str(bad), "--port", "0")
    assert code == 2 and "not valid YAML" in err


def test_port_in_use_is_exit_2(capsys, tmp_path):
    inv = local_inventory(tmp_path / "inv.yaml")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        code, err = run(capsys, "--inventory", str(inv), "--port", str(s.getsockname()[1]))
    finally:
        s.close()
    assert code == 2 and "cannot listen on 127.0.0.1:" in err and "--port" in err


def test_other_commands_do_not_load_the_web_stack():
    code = ("import sys; from warpforge_launch.cli import build_parser; build_parser(); "
            "bad = [m for m in ('starlette', 'uvicorn', 'httpx') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=30,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("how", ["--token-file", "--token"])
def test_a_real_server_answers_and_stops_on_ctrl_c(tmp_path, how):
    import httpx

    inv = local_inventory(tmp_path / "inv.yaml")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    given = str(token_file) if how == "--token-file" else TOKEN
    proc = subprocess.Popen(
        [sys.executable, "-m", "warpforge_launch", "serve", "--inventory", str(inv),
         "--host", "127.0.0.2", "--port", "0", how, given],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving http://127.0.0.2:"), line
        assert "token required" in line and TOKEN not in line  # never printed (logs)
        url = line.split()[1].split("?")[0]
        with httpx.Client(base_url=url, timeout=10, trust_env=False) as c:
            assert c.get("api/meta").status_code == 401
            r = c.get("api/meta", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200 and r.json()["schedulers"] == ["local"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, proc.stderr.read()
