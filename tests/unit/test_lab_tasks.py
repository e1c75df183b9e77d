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
