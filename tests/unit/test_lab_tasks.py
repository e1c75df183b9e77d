"""invoke's start: listing the tasks (and collecting them for any task) imports none of the
lab stack; each task imports what it needs in its own body."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("fabric", "paramiko", "rich", "pydantic", "yaml", "wakeonlan", "testinfra", "jinja2",
         "httpx", "warpforge_launch.lab", "warpforge_launch.inventory")
PROBE = """
import sys
sys.argv = ["invoke", "--list"]
from invoke.main import program
before = set(sys.modules)  # invoke's own imports (it loads PyYAML itself) are not ours
try:
    program.run()
except SystemExit as e:
    assert not e.code, e.code
print("LOADED", " ".join(m for m in %r if m in set(sys.modules) - before))
"""


def test_invoke_list_imports_no_lab_stack():
    p = subprocess.run([sys.executable, "-c", PROBE % (HEAVY,)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "distribute" in p.stdout and "smoke" in p.stdout  # the tasks were collected
    loaded = p.stdout.rsplit("LOADED", 1)[1].split()
    assert loaded == [], f"`invoke --list` imported {loaded}"


def test_invoke_usage_errors_are_one_error_line_and_exit_2():
    """invoke's parser words (an unknown flag, a flag without its value, a missing
    positional) come out as the lab's usage errors: `error: ...`, a hint, exit 2."""
    for argv, said in ((["distribute", "--bogus"], "No idea what '--bogus' is!"),
                       (["wake", "--timeout"], "needed value and was not given one"),
                       (["shutdown-mode", "--inventory", "x"],
                        "did not receive required positional arguments: 'action'")):
        p = subprocess.run([sys.executable, "-m", "invoke", *argv], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, (argv, p.stderr)
        first, hint = p.stderr.splitlines()[:2]
        assert first.startswith("error: ") and said in first and hint.startswith("hint: ")
