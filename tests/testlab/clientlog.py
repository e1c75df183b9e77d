"""PATH wrappers that count the Slurm client calls a command really makes.

``wrap(dir, log)`` puts ``sbatch``, ``squeue``, ``sacct``, ``scancel`` and ``scontrol``
scripts into ``dir``; each appends one line (program and arguments) to ``log`` and execs the
real client. ``sbatch`` also keeps the script it read on stdin (``<log>.sbatch.<n>``), so a
test can check what the cluster received. Put ``dir`` first on the PATH of the process that
runs the clients (the CLI, or a LocalTransport's env).
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

PROGRAMS = ("sbatch", "squeue", "sacct", "scancel", "scontrol")


def wrap(directory: Path, log: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in PROGRAMS:
        real = shutil.which(name)
        if real is None:
            raise FileNotFoundError(f"{name} is not installed")
        body = [f"printf '%s\\n' \"{name} $*\" >> {shlex.quote(str(log))}"]
        if name == "sbatch":
            body += [f"n=$(wc -l < {shlex.quote(str(log))})",
                     f"copy={shlex.quote(str(log))}.sbatch.$n",
                     'cat > "$copy"', f'exec {shlex.quote(real)} "$@" < "$copy"']
        else:
            body.append(f'exec {shlex.quote(real)} "$@"')
        path = directory / name
        path.write_text("#!/bin/sh\n" + "\n".join(body) + "\n")
        path.chmod(0o755)
    return directory


def calls(log: Path) -> list[list[str]]:
    """Every recorded call: [program, *args] (arguments split on blanks)."""
    if not log.exists():
        return []
    return [line.split() for line in log.read_text().splitlines() if line.strip()]


def count(log: Path, program: str) -> int:
    return sum(1 for c in calls(log) if c and c[0] == program)


def scripts(log: Path) -> list[str]:
    """The scripts sbatch received, in call order."""
    found = sorted(log.parent.glob(log.name + ".sbatch.*"),
                   key=lambda p: int(p.name.rsplit(".", 1)[1]))
    return [p.read_text() for p in found]
