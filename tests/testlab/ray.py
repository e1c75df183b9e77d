"""A loopback Ray head for the tests: start it, wait for its Jobs API, reuse it, stop it.

Why this shape (TESTLAB.md, "Ray"):
- Ray lives in its own venv (``.ci/setup.d/40-ray.sh``): the CLI under test talks HTTP and
  must not find the Ray SDK importable.
- Everything binds 127.0.0.1 with every port pinned inside the project's Ray range, and
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` stops Ray from rebinding to the machine's NIC.
- The head declares a fake GPU and the ``nvidia`` custom resource only, so vendor routing can
  fail (an AMD job must never start on it), and ``CUDA_VISIBLE_DEVICES`` and "more GPUs than
  exist" can be tested without hardware.
- ``RAY_JOB_START_TIMEOUT_SECONDS`` is low: a job waiting for resources ignores ``/stop``
  and only fails when that timeout expires.
- Stopping never uses ``ray stop`` (it kills every Ray process on the machine): it ends the
  processes whose command line names this lab's own temp dir, plus their descendants, by PID.

Also a small command line for benchmarks and by-hand use:
``python -m tests.testlab.ray start|stop|status``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
GCS_PORT = 16379
DASHBOARD_PORT = 18265
PORTS = {
    "--port": GCS_PORT,
    "--dashboard-port": DASHBOARD_PORT,
    "--ray-client-server-port": 16380,
    "--dashboard-agent-listen-port": 16381,
    "--dashboard-agent-grpc-port": 16382,
    "--runtime-env-agent-port": 16383,
    "--metrics-export-port": 16384,
    "--node-manager-port": 16385,
    "--object-manager-port": 16386,
    # its own hundred: the Kubernetes lab's apiserver (16443) and dead port (16449) sit in
    # 16400-16499, and a worker that took one of them kept the node from starting
    "--min-worker-port": 16500,
    "--max-worker-port": 16599,
}
NUM_CPUS = 8  # declared, not real: lets the tiny test payloads run side by side
NUM_GPUS = 1
CUSTOM_RESOURCES = {"nvidia": 1}  # no amd: an AMD job must find no node
JOB_START_TIMEOUT_S = 30  # low for the pending-job test; 10 s failed jobs on a loaded CI box
OBJECT_STORE_BYTES = 100_000_000


def tools_dir() -> Path:
    return Path(os.environ.get("WF_LAB_TOOLS", "/opt/wf-lab-tools"))


def venv_dir() -> Path:
    return tools_dir() / "ray-venv"


def ray_binary() -> Path | None:
    """The ``ray`` CLI of the lab's own venv, or None when 40-ray.sh has not run."""
    path = venv_dir() / "bin" / "ray"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def lab_dir() -> Path:
    return Path(os.environ.get("WF_LAB", "/tmp/wf-lab")) / "ray"


def api_url() -> str:
    return f"http://{HOST}:{DASHBOARD_PORT}"


def lab_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ``ray start``; job entrypoints inherit it (PATH included)."""
    env = dict(os.environ if base is None else base)
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_JOB_START_TIMEOUT_SECONDS=str(JOB_START_TIMEOUT_S),
        # The entrypoint runs under /bin/sh -c with this PATH: the Ray venv comes first so
        # a bare `python` would be Ray's, never the project's (tests use absolute paths).
        PATH=f"{venv_dir() / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
    )
    for proxy in (
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        env.pop(proxy, None)
    env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.0/8,::1"
    return env


def _get_json(url: str, timeout: float = 2.0) -> object:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


def jobs_api_answers(url: str | None = None, timeout: float = 1.0) -> bool:
    try:
        _get_json(f"{url or api_url()}/api/jobs/", timeout=timeout)
        return True
    except (OSError, ValueError):
        return False


def node_totals(url: str | None = None) -> list[dict[str, float]]:
    """resources_total of every ALIVE node, as the dashboard reports them."""
    doc = _get_json(f"{url or api_url()}/api/v0/nodes", timeout=5.0)
    nodes = doc["data"]["result"]["result"]
    return [n["resources_total"] for n in nodes if n.get("state") == "ALIVE"]


@dataclasses.dataclass
class RayHead:
    """A running loopback head; ``owned`` says whether this process started it."""

    url: str
    owned: bool
    temp_dir: Path
    ray_bin: Path
    num_cpus: int = NUM_CPUS
    num_gpus: int = NUM_GPUS
    resources: dict[str, float] = dataclasses.field(default_factory=lambda: dict(CUSTOM_RESOURCES))
    started_in_s: float = 0.0

    @property
    def python(self) -> Path:
        return self.ray_bin.parent / "python"

    def processes(self) -> list[int]:
        return lab_processes(self.temp_dir)

    def stop(self, grace_s: float = 3.0) -> None:
        """End this lab's processes by PID; a head this process did not start stays up."""
        if self.owned:
            stop_lab_processes(self.temp_dir, grace_s=grace_s)


class LabError(RuntimeError):
    """The lab could not be had (no Ray venv, port taken by a foreign cluster, no start)."""


def _matches_lab(totals: dict[str, float]) -> bool:
    want = {"CPU": NUM_CPUS, "GPU": NUM_GPUS, **CUSTOM_RESOURCES}
    return all(float(totals.get(k, -1)) == float(v) for k, v in want.items())


def start_head(deadline_s: float = 90.0) -> RayHead:
    """Reuse the lab head if one answers on the lab port, else start one and wait for it."""
    ray = ray_binary()
    if ray is None:
        raise LabError(f"no Ray venv at {venv_dir()} (run .ci/setup.d/40-ray.sh)")
    temp_dir = lab_dir() / "rt"
    if jobs_api_answers():
        totals = node_totals()
        if len(totals) == 1 and _matches_lab(totals[0]):
            return RayHead(api_url(), owned=False, temp_dir=temp_dir, ray_bin=ray)
        raise LabError(
            f"a Ray cluster not shaped like the lab's answers on {api_url()} ({totals}); "
            "stop it or free the port"
        )
    if lab_processes(temp_dir):  # a half-dead lab head of an earlier run: clear it first
        stop_lab_processes(temp_dir)
    temp_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(ray), "start", "--head",
        f"--node-ip-address={HOST}", f"--dashboard-host={HOST}",
        *(f"{flag}={port}" for flag, port in PORTS.items()),
        f"--num-cpus={NUM_CPUS}", f"--num-gpus={NUM_GPUS}",
        f"--resources={json.dumps(CUSTOM_RESOURCES)}",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats", "--log-style=record",
    ]  # fmt: skip
    t0 = time.monotonic()
    log = lab_dir() / "start.log"
    with open(log, "wb") as out:
        try:
            proc = subprocess.run(
                argv, env=lab_env(), stdout=out, stderr=subprocess.STDOUT, check=False,
                stdin=subprocess.DEVNULL, timeout=deadline_s, cwd=str(lab_dir()),
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            stop_lab_processes(temp_dir)
            raise LabError(f"`ray start` did not return in {deadline_s:.0f} s; see {log}") from None
    if proc.returncode != 0:
        stop_lab_processes(temp_dir)
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise LabError(f"`ray start` failed ({proc.returncode}): {' | '.join(tail)}")
    head = RayHead(api_url(), owned=True, temp_dir=temp_dir, ray_bin=ray)
    while not _ready():
        if time.monotonic() - t0 > deadline_s:
            head.stop()
            raise LabError(f"Ray Jobs API at {api_url()} not up after {deadline_s:.0f} s")
        time.sleep(0.2)
    head.started_in_s = time.monotonic() - t0
    return head


def _ready() -> bool:
    """Jobs API answers and the head node is registered with its resources."""
    if not jobs_api_answers():
        return False
    try:
        return any(_matches_lab(t) for t in node_totals())
    except (OSError, ValueError, KeyError, TypeError):
        return False


# --- processes, by PID ----------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command line) for every process we can read."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        table[pid] = (ppid, cmdline)
    return table


def lab_processes(temp_dir: Path) -> list[int]:
    """PIDs of the processes of the head that owns ``temp_dir``, and all their descendants.

    Every Ray daemon of a head names its temp or session dir, or its node id, on its command
    line, so this finds exactly one cluster's processes, whatever other Ray clusters run on
    the machine.
    """
    root = str(temp_dir.resolve())
    markers = [root + "/", f"={root} "] + [f"--node-id={n}" for n in _node_ids(temp_dir)]
    table = _proc_table()
    me = os.getpid()
    roots = {
        pid for pid, (_, cmd) in table.items()
        if pid != me and any(m in cmd + " " for m in markers)
    }  # fmt: skip
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in table.items():
            if ppid in found and pid not in found and pid != me:
                found.add(pid)
                changed = True
    return sorted(found)


def _node_ids(temp_dir: Path) -> set[str]:
    """Node ids of this lab's sessions (the client server names only its node id)."""
    return {
        p.name.removeprefix("gcs_server_port_")
        for p in temp_dir.glob("session_*/gcs_server_port_*")
    }


def stop_lab_processes(temp_dir: Path, grace_s: float = 3.0) -> list[int]:
    """SIGTERM this lab's processes, SIGKILL what is left after ``grace_s``.

    gcs_server and the autoscaler monitor outlive a SIGTERM for long (like `ray stop`, which
    waits 16 s by default): a short grace and then SIGKILL keeps teardown quick.
    """
    pids = lab_processes(temp_dir)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return pids
        time.sleep(0.2)
    for pid in set(pids) | set(lab_processes(temp_dir)):
        _signal(pid, signal.SIGKILL)
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().decode(errors="replace").rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def _main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "status"
    if cmd == "start":
        head = start_head()
        how = f"started in {head.started_in_s:.1f} s" if head.owned else "already running"
        print(f"ray head {how}: {head.url} (temp dir {head.temp_dir})")
        return 0
    if cmd == "stop":
        pids = stop_lab_processes(lab_dir() / "rt")
        print(f"stopped {len(pids)} process(es)")
        return 0
    if cmd == "status":
        up = jobs_api_answers()
        pids = lab_processes(lab_dir() / "rt")
        print(f"{api_url()}: {'up' if up else 'down'}; lab processes: {pids}")
        return 0 if up else 3
    print("usage: python -m tests.testlab.ray start|stop|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
