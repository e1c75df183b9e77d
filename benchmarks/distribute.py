"""Distribute vs parallel rsync on loopback sshd boxes, with a ~200 MB generated dist.

Measures, alternating A/B over several rounds and printing medians and ratios:
  1. first push to 2 boxes: `distribute` vs parallel `rsync -a -e ssh` (fresh connections);
  2. unchanged re-push to 2 boxes: `distribute` (fresh connection, as a new task run has) vs
     rsync's no-op re-push over already open (reused) SSH connections; both must send no file;
  3. parallelism: first push and unchanged re-push to 10 boxes vs to 1 box.

Needs root, sshd and rsync (.ci/setup.d/30-ssh.sh). Uses ten boxes on free slots of
127.0.0.24-39 (port 2200 + last octet) and stops the boxes it started.
Run:  .venv/bin/python benchmarks/distribute.py [--rounds N] [--dist DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.lab.fakedist import make_dist  # noqa: E402
from tests.testlab import sshboxes  # noqa: E402
from warpforge_launch.lab import releases  # noqa: E402
from warpforge_launch.lab.remote import Sessions, Timeouts  # noqa: E402


def lab_boxes(lab: sshboxes.SshLab, names, install_dir: str):
    from tests.integration.lab.boxes import lab_box

    return [lab_box(lab, n, install_dir=install_dir) for n in names]


def settle() -> None:
    """Write back dirty pages first, so one run's writeback does not land in the next's time."""
    os.sync()


def ours(lab, names, dist, install_dir, parallel, sessions=None, expect="pushed"
         ) -> tuple[float, list]:
    opts = releases.Options(parallel=parallel, timeouts=Timeouts(command=600))
    boxes = lab_boxes(lab, names, install_dir)
    settle()
    t0 = time.perf_counter()
    results = releases.distribute(boxes, dist, opts=opts, sessions=sessions)
    elapsed = time.perf_counter() - t0
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"distribute failed: {bad[0].error}")
    wrong = [r for r in results if r.action != expect]
    if wrong:
        raise SystemExit(f"expected {expect}, got {wrong[0].action} on {wrong[0].box}")
    return elapsed, results


def rsync_argv(lab, name, dist, dest, extra=()):
    return ["rsync", "-a", "--delete", "--stats", "-e",
            f"ssh -F {lab.ssh_config} {' '.join(extra)}".strip(), f"{dist}/", f"{name}:{dest}/"]


def rsync_parallel(lab, names, dist, dest, extra=("-o", "ControlPath=none")
                   ) -> tuple[float, list[str]]:
    """Parallel rsync; by default over fresh connections (no ControlMaster socket used)."""
    settle()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(rsync_argv(lab, n, dist, dest, extra), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in names]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode:
            raise SystemExit(f"rsync failed: {err.strip()}")
        outs.append(out)
    return time.perf_counter() - t0, outs


def files_transferred(stats: str) -> int:
    for line in stats.splitlines():
        if line.startswith("Number of regular files transferred:"):
            return int(line.split(":")[1].replace(",", ""))
    raise ValueError("no rsync stats")


def wipe(lab, names, install_dir):
    for n in names:
        lab.ssh(n, "rm", "-rf", "--", install_dir)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4,
                    help="an even number balances who goes first in a round")
    ap.add_argument("--size-mb", type=float, default=190)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--dist", type=Path, help="an existing dist instead of the generated one")
    ap.add_argument("--two-only", action="store_true", help="skip the 10-box measurements")
    a = ap.parse_args()
    why = sshboxes.available()
    if why:
        print(f"cannot run: {why}")
        return 2
    lab = sshboxes.bench_lab(fresh=True)  # ten free slots of the shared 127.0.0.24-39 range
    lab.setup()
    os.environ["WARPFORGE_HOME"] = str(lab.root / "home")  # caches and hints: not the user's
    started = lab.start_all()
    masters: list[subprocess.Popen] = []
    try:
        dist = a.dist or make_dist(lab.root / "dist", size_mb=a.size_mb, files=a.files)
        total = sum(f.stat().st_size for f in dist.rglob("*") if f.is_file())
        nfiles = sum(1 for f in dist.rglob("*") if f.is_file())
        print(f"dist: {total / 1e6:.0f} MB in {nfiles} files; boxes: {len(lab.boxes)}")
        two, all10 = ["b01", "b02"], list(lab.boxes)
        cm = ["-o", "ControlMaster=auto", "-o", f"ControlPath={lab.control_dir}/%C"]
        for n in two:  # reused connections for rsync's no-op re-push
            masters.append(subprocess.Popen(["ssh", "-F", str(lab.ssh_config), "-o",
                                             "ControlMaster=yes", "-o",
                                             f"ControlPath={lab.control_dir}/%C", "-N", n],
                                            stdin=subprocess.DEVNULL))
        time.sleep(1.0)
        fig: dict[str, list[float]] = {k: [] for k in (
            "ours_first2", "rsync_first2", "ours_noop2", "rsync_noop2_fresh",
            "ours_noop2_reused", "rsync_noop2_reused",
            "ours_first1", "ours_first10", "ours_first10_serial", "ours_noop1", "ours_noop10",
            "ours_noop10_serial")}
        sessions = Sessions()  # "reused connections" for us: one open session per box
        for b in lab_boxes(lab, two, "/opt/unused"):
            sessions.get(b)
        for rnd in range(a.rounds):
            d_ours, d_rsync = f"/opt/wf-bench-{rnd}-ours", f"/opt/wf-bench-{rnd}-rsync"
            order = ["ours", "rsync"] if rnd % 2 == 0 else ["rsync", "ours"]
            for who in order:
                if who == "ours":
                    wipe(lab, two, d_ours)
                    t, _ = ours(lab, two, dist, d_ours, parallel=2)
                    fig["ours_first2"].append(t)
                    t, res = ours(lab, two, dist, d_ours, parallel=2, expect="unchanged")
                    assert all(r.files_sent == 0 for r in res), res
                    fig["ours_noop2"].append(t)
                    t, res = ours(lab, two, dist, d_ours, parallel=2, sessions=sessions,
                                  expect="unchanged")
                    assert all(r.action == "unchanged" and r.files_sent == 0 for r in res), res
                    fig["ours_noop2_reused"].append(t)
                else:
                    wipe(lab, two, d_rsync)
                    t, _ = rsync_parallel(lab, two, dist, d_rsync)
                    fig["rsync_first2"].append(t)
                    t, outs = rsync_parallel(lab, two, dist, d_rsync)
                    assert all(files_transferred(o) == 0 for o in outs), outs
                    fig["rsync_noop2_fresh"].append(t)
                    t, outs = rsync_parallel(lab, two, dist, d_rsync, extra=cm)
                    assert all(files_transferred(o) == 0 for o in outs), outs
                    fig["rsync_noop2_reused"].append(t)
            wipe(lab, two, d_ours)
            wipe(lab, two, d_rsync)
            runs = {"1": (all10[:1], 1), "10": (all10, len(all10)), "10_serial": (all10, 1)}
            keys = list(runs) if rnd % 2 == 0 else list(reversed(runs))
            if a.two_only:
                keys = []
            for key in keys:
                names, parallel = runs[key]
                d = f"/opt/wf-bench-{rnd}-{key}"
                wipe(lab, names, d)
                t, _ = ours(lab, names, dist, d, parallel=parallel)
                fig[f"ours_first{key}"].append(t)
                t, res = ours(lab, names, dist, d, parallel=parallel, expect="unchanged")
                assert all(r.files_sent == 0 for r in res)
                fig[f"ours_noop{key}"].append(t)
                wipe(lab, names, d)
            print(f"round {rnd + 1}: " + ", ".join(f"{k}={v[-1]:.3f}" for k, v in fig.items()
                                                   if v))
        med = {k: statistics.median(v) for k, v in fig.items() if v}
        print("\nmedians (s):")
        for k, v in med.items():
            print(f"  {k:22s} {v:7.3f}")
        # Right after a round's clean-up deleted the last round's trees, the first writer of
        # a round runs slower on this disk (ext4 with online discard): the order alternates,
        # and the geometric mean of the per-round ratios cancels that position effect.
        def paired(a_key, b_key):
            ratios = [x / y for x, y in zip(fig[a_key], fig[b_key], strict=True)]
            return math.prod(ratios) ** (1 / len(ratios))

        print("\nper-round ratios, geometric mean (position-balanced):")
        print(f"  first push, 2 boxes, ours/rsync:                   "
              f"{paired('ours_first2', 'rsync_first2'):.2f}")
        print(f"  unchanged re-push, both over reused connections:   "
              f"{paired('ours_noop2_reused', 'rsync_noop2_reused'):.2f}")
        print(f"  unchanged re-push, both with fresh connections:    "
              f"{paired('ours_noop2', 'rsync_noop2_fresh'):.2f}")
        print("\nratios of medians (target):")
        print(f"  first push, 2 boxes, ours/rsync:           "
              f"{med['ours_first2'] / med['rsync_first2']:.2f}  (<= 1.0)")
        print(f"  unchanged re-push, ours (new task) / rsync (reused connections): "
              f"{med['ours_noop2'] / med['rsync_noop2_reused']:.2f}  (<= 1.0; no file sent)")
        print(f"  unchanged re-push, both over reused connections:            "
              f"{med['ours_noop2_reused'] / med['rsync_noop2_reused']:.2f}")
        print(f"  unchanged re-push, both with fresh connections:             "
              f"{med['ours_noop2'] / med['rsync_noop2_fresh']:.2f}")
        if a.two_only:
            return 0
        print(f"  first push, 10 boxes / 1 box:              "
              f"{med['ours_first10'] / med['ours_first1']:.2f}  (<= 3.0)")
        print(f"  unchanged re-push, 10 boxes / 1 box:       "
              f"{med['ours_noop10'] / med['ours_noop1']:.2f}  (<= 3.0)")
        print(f"  10 boxes, parallel / one at a time:        first push "
              f"{med['ours_first10'] / med['ours_first10_serial']:.2f}, unchanged re-push "
              f"{med['ours_noop10'] / med['ours_noop10_serial']:.2f}")
        sessions.close()
    finally:
        for p in masters:
            p.terminate()
            p.wait(timeout=10)
        lab.close_control_masters()
        lab.stop_all(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
