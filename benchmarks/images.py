"""`invoke images` and `invoke sif` against the Docker CLI and a bare mksquashfs.

    .venv/bin/python benchmarks/images.py [--rounds 3] [--dist DIR] [--venv-mb 64] [--no-fail]

Runs on a private dockerd of its own ($WF_LAB/dkb, tests/testlab/docker.py) and a
registry started by `registry.up`'s own code on 127.0.0.1. The dist is synthetic unless
--dist is given: the stand-in's bin/ plus a venv of --venv-mb MiB of incompressible files
(what matters here is bytes moved, not what the files do; the image checks are off on both
sides).

Rows (alternating A/B rounds, medians):
  cold      make_images (build + push) vs `docker build` + `docker push` (classic builder,
            the same engine API the SDK uses), each round on new venv content: <= 1.05x
  warm      the same again with nothing changed (CLI: cached build + push): <= 1.05x
  no-change invoke images with nothing changed: 0 bytes pushed, <= 2 s
  binary    a new launcher only: bytes the registry grew by vs the venv layer (only the small
            layer may travel: < 5 % of the venv)
  sif       sif.assemble (mksquashfs + siftool + definition) vs bare mksquashfs of the same
            rootfs: <= 1.1x
Exit 1 when a target is missed (unless --no-fail).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from tests.testlab.docker import PY_IMAGE, DockerLab, free_port  # noqa: E402

CLI = "/usr/bin/docker"


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def synthetic_dist(root: Path, venv_mb: int) -> Path:
    dist = root / "dist"
    (dist / "bin").mkdir(parents=True)
    (dist / "venv/lib/python3.11/site-packages/blob").mkdir(parents=True)
    for name in ("snakegrinder", "snakegrinder-bin"):
        (dist / "bin" / name).write_text("#!/bin/sh\necho snakegrinder stand-in\n")
        (dist / "bin" / name).chmod(0o755)
    for i in range(venv_mb):
        (dist / f"venv/lib/python3.11/site-packages/blob/{i:04d}.so").write_bytes(
            os.urandom(1 << 20))
    return dist


def inventory_for(root: Path, port: int, name: str):
    from warpforge_launch import inventory

    doc = {"version": 1, "schedulers": {"local": {"type": "local"}},
           "build": {"profile": "standin", "source": str(root)},
           "registry": {"host": "127.0.0.1", "bind": "127.0.0.1", "port": port,
                        "data_dir": str(root / "registry"), "container": f"wf-bench-reg-{port}"},
           "images": {"name": name, "vendors": ["nvidia"],
                      "base_images": {"nvidia": PY_IMAGE, "amd": PY_IMAGE}}}
    path = root / f"inventory-{name}.json"
    path.write_text(json.dumps(doc))
    return inventory.load(path, env={})


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cli(*args: str, env=None) -> None:
    subprocess.run([CLI, *args], check=True, capture_output=True, timeout=1800, env=env)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dist", type=Path)
    ap.add_argument("--venv-mb", type=int, default=64)
    ap.add_argument("--no-fail", action="store_true")
    a = ap.parse_args(argv)

    from warpforge_launch.lab import images, registry, sif

    lab = DockerLab(Path(os.environ.get("WF_LAB", "/tmp/wf-lab")) / "dkb")  # not the tests' engine
    lab.start()
    lab.ensure_images()
    os.environ["DOCKER_HOST"] = lab.url
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    client = lab.client()
    work = Path(tempfile.mkdtemp(prefix="wf-bench-img-"))
    port = free_port(15700, 15799)
    rows: list[tuple[str, str, str, bool]] = []
    quiet = lambda line: None  # noqa: E731
    try:
        src = a.dist or synthetic_dist(work, a.venv_mb)
        ours_inv = inventory_for(work, port, "bench-sdk")
        theirs_inv = inventory_for(work, port, "bench-cli")
        registry.up(ours_inv.registry, client)
        dockerfile = images.dockerfile(ours_inv, "nvidia")

        def fresh_dist(tag: str) -> Path:
            d = work / f"dist-{tag}"
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(src, d, symlinks=True)
            (d / "venv/round.bin").write_bytes(os.urandom(1 << 20))
            return d

        def ours(dist: Path) -> float:
            return timed(lambda: images.make_images(ours_inv, client, dist, check_images=False,
                                                    say=quiet))

        def theirs(dist: Path) -> float:
            from warpforge_launch.lab import manifest

            h = manifest.scan(dist).hash
            p = images.plan(theirs_inv, dist, h, "nvidia")
            ctx = images.stage_context(dist, work / "cli-ctx")
            ref = f"{images.repository(theirs_inv)}:{p.tags[0]}"
            args = [x for k, v in {**p.buildargs, "BUILD_KEY": p.key}.items()
                    for x in ("--build-arg", f"{k}={v}")]
            return timed(lambda: (cli("build", "-q", "--network", "none", "-t", ref, *args,
                                      "-f", str(dockerfile), str(ctx), env=env),
                                  cli("push", ref, env=env)))

        cold = {"sdk": [], "cli": []}
        warm = {"sdk": [], "cli": []}
        for i in range(a.rounds):
            for side, fn in (("sdk", ours), ("cli", theirs)) if i % 2 == 0 else (
                    ("cli", theirs), ("sdk", ours)):
                d = fresh_dist(f"{side}-{i}")
                cold[side].append(fn(d))
                warm[side].append(fn(d))
        for label, data in (("cold build+push", cold), ("warm build+push", warm)):
            s, c = statistics.median(data["sdk"]), statistics.median(data["cli"])
            rows.append((label, "<= 1.05x CLI", f"{s:.2f}s vs {c:.2f}s = {s / c:.2f}x",
                         s / c <= 1.05))

        # no change: time and bytes
        d = fresh_dist("nochange")
        ours(d)
        reg_dir = work / "registry"
        before = du(reg_dir)
        t = statistics.median(ours(d) for _ in range(a.rounds))
        grown = du(reg_dir) - before
        rows.append(("no-change rebuild", "0 B, <= 2 s", f"{grown} B, {t:.2f}s",
                     grown == 0 and t <= 2.0))

        # binary only: bytes the registry grows by
        launcher = d / "bin/snakegrinder"
        launcher.write_text(launcher.read_text() + "# new build\n")
        before = du(reg_dir)
        ours(d)
        grown = du(reg_dir) - before
        venv = du(d / "venv")
        rows.append(("binary-only change", "< 5% of venv pushed",
                     f"{grown / 1024:.0f} KiB pushed (venv {venv / 2**20:.0f} MiB)",
                     grown < venv / 20))

        # SIF assembly vs bare mksquashfs of the same rootfs
        ref = f"{images.repository(ours_inv)}:nvidia"
        root = work / "rootfs"
        config = sif.export_rootfs(client, ref, root)
        deffile = work / "Singularity"
        deffile.write_text(sif.definition(ref, config))
        sif.write_metadata(root, config, deffile.read_text())
        bare = lambda: subprocess.run(  # noqa: E731
            ["mksquashfs", str(root), str(work / "bare.sqfs"), "-noappend", "-comp", "gzip",
             "-all-root", "-quiet", "-no-progress"], check=True, capture_output=True)
        samples = {"sif": [], "bare": []}
        for i in range(a.rounds):
            order = (("sif", lambda: sif.assemble(root, deffile, work / "x.sif")),
                     ("bare", bare))
            for name, fn in (order if i % 2 == 0 else order[::-1]):
                samples[name].append(timed(fn))
        s, b = statistics.median(samples["sif"]), statistics.median(samples["bare"])
        rows.append(("SIF assembly", "<= 1.1x mksquashfs", f"{s:.2f}s vs {b:.2f}s = {s / b:.2f}x",
                     s / b <= 1.1))
    finally:
        try:
            registry.down(ours_inv.registry, client)
        except Exception:  # noqa: BLE001 - best effort: the lab may be down already
            pass
        client.close()
        shutil.rmtree(work, ignore_errors=True)
        if lab.started:
            lab.stop()

    print(f"{'measure':<22} {'target':<22} {'measured':<44} ok")
    for name, target, measured, ok in rows:
        print(f"{name:<22} {target:<22} {measured:<44} {'yes' if ok else 'MISS'}")
    missed = [r for r in rows if not r[3]]
    return 1 if missed and not a.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
