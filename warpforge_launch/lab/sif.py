"""SIF files for Slurm: one per vendor, made from the image the registry serves.

With apptainer or singularity on PATH the SIF is built by it from the registry. Without
either (most build boxes), it is assembled the way those tools lay it out: the image's
exported root filesystem plus the /.singularity.d metadata, squashed with mksquashfs, put in
a SIF container with siftool next to its definition file. A new SIF is written beside the
target, checked with `siftool list`, and renamed into place; the SIF it replaces is kept as
<name>.prev.sif. The definition file beside the SIF names the image digest it came from, so
an unchanged image costs no rebuild.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from warpforge_launch.errors import LaunchError, UsageError

SQUASHFS_TIMEOUT = 3600.0
TOOL_TIMEOUT = 120.0
LAUNCH_LINE = b"#!/usr/bin/env run-singularity\n"

_ACTION_RUN = """#!/bin/sh
for script in /.singularity.d/env/*.sh; do
  if [ -f "$script" ]; then . "$script"; fi
done
exec /.singularity.d/runscript "$@"
"""
_ACTION_EXEC = """#!/bin/sh
for script in /.singularity.d/env/*.sh; do
  if [ -f "$script" ]; then . "$script"; fi
done
exec "$@"
"""


@dataclasses.dataclass
class SifResult:
    vendor: str
    path: str
    image: str  # <registry>/<name>@<digest>
    outcome: str  # built, unchanged
    size: int = 0
    seconds: float = 0.0


def target_path(inv, vendor: str) -> Path:
    """The Slurm scheduler's image_<vendor>, else <images.sif_dir>/<name>-<vendor>.sif."""
    for entry in inv.schedulers.values():
        path = getattr(entry.config, f"image_{vendor}", None) if entry.type == "slurm" else None
        if path:
            return Path(path).expanduser()
    return Path(inv.images.sif_dir).expanduser() / f"{inv.images.name}-{vendor}.sif"


def runscript(config: dict) -> str:
    """exec the image's entrypoint with the run arguments. Callers that pass the whole argv,
    program path first (`run IMAGE /opt/warpforge/bin/snakegrinder ARGS`), get the same."""
    entry = (config.get("Entrypoint") or []) or (config.get("Cmd") or []) or ["/bin/sh"]
    return (f"#!/bin/sh\nif [ \"${{1:-}}\" = {shlex.quote(entry[0])} ]; then shift; fi\n"
            f"exec {shlex.join(entry)} \"$@\"\n")


def definition(image: str, config: dict) -> str:
    """A Singularity definition that rebuilds the same image with apptainer/singularity."""
    entry = (config.get("Entrypoint") or []) + (config.get("Cmd") or [] if not
                                                config.get("Entrypoint") else [])
    lines = ["Bootstrap: docker", f"From: {image}", "", "%runscript",
             f"    exec {shlex.join(entry or ['/bin/sh'])} \"$@\"", "", "%labels"]
    for k, v in sorted((config.get("Labels") or {}).items()):
        lines.append(f"    {k} {v}")
    return "\n".join(lines) + "\n"


def runtime_tool() -> str | None:
    return shutil.which("apptainer") or shutil.which("singularity")


def _run(argv, what: str, timeout: float = TOOL_TIMEOUT, **kw) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                           stdin=subprocess.DEVNULL, **kw)
    except FileNotFoundError:
        raise UsageError(f"{argv[0]} is not installed",
                         hint="apt-get install squashfs-tools siftool") from None
    except subprocess.TimeoutExpired:
        raise LaunchError(f"{what} did not finish within {timeout:.0f}s") from None
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or [f"exit {r.returncode}"]
        raise LaunchError(f"{what} failed: {tail[0]}")
    return r


def export_rootfs(client, image: str, root: Path) -> dict:
    """The image's filesystem into root (through `tar -x`); returns the image config."""
    img = client.images.get(image)
    # a command is needed to create a container from an image without one; it never runs
    c = client.containers.create(img.id, ["/.warpforge-export"], entrypoint=[],
                                 network_disabled=True, network_mode="none")
    try:
        root.mkdir(parents=True, exist_ok=True)
        tar = subprocess.Popen(["tar", "-x", "-C", str(root), "--exclude=.dockerenv",
                                "--no-same-owner"], stdin=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        try:
            for chunk in c.export(chunk_size=1 << 20):
                tar.stdin.write(chunk)
        finally:
            tar.stdin.close()
            err = tar.stderr.read().decode(errors="replace").strip()
            code = tar.wait(timeout=TOOL_TIMEOUT)
        if code != 0:
            raise LaunchError(f"unpacking {image} failed: {err.splitlines()[-1:] or code}")
    finally:
        c.remove(force=True)
    return img.attrs.get("Config") or {}


def write_metadata(root: Path, config: dict, deffile: str) -> None:
    """/.singularity.d as apptainer lays it out: env, runscript, actions, labels, def."""
    sd = root / ".singularity.d"
    for sub in ("env", "actions", "libs"):
        (sd / sub).mkdir(parents=True, exist_ok=True)
    env_lines = ["#!/bin/sh"]
    for item in config.get("Env") or []:
        key, _, value = item.partition("=")
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            env_lines.append(f"export {key}={shlex.quote(value)}")
    (sd / "env" / "10-docker2singularity.sh").write_text("\n".join(env_lines) + "\n")
    (sd / "runscript").write_text(runscript(config))
    (sd / "actions" / "run").write_text(_ACTION_RUN)
    (sd / "actions" / "exec").write_text(_ACTION_EXEC)
    (sd / "labels.json").write_text(json.dumps(config.get("Labels") or {}, indent=2) + "\n")
    (sd / "Singularity").write_text(deffile)
    for p in (sd / "runscript", sd / "actions" / "run", sd / "actions" / "exec",
              sd / "env" / "10-docker2singularity.sh"):
        p.chmod(0o755)
    link = root / "singularity"
    if not link.exists() and not link.is_symlink():
        link.symlink_to(".singularity.d/runscript")


def assemble(root: Path, deffile: Path, out: Path, *, processors: int | None = None) -> None:
    """rootfs + definition -> SIF (squashfs partition, the definition as a data object)."""
    sqfs = out.with_name(out.name + ".squashfs")
    try:
        argv = ["mksquashfs", str(root), str(sqfs), "-noappend", "-comp", "gzip",
                "-all-root", "-quiet", "-no-progress"]
        if processors:
            argv += ["-processors", str(processors)]
        _run(argv, "mksquashfs", timeout=SQUASHFS_TIMEOUT)
        out.unlink(missing_ok=True)
        _run(["siftool", "new", str(out)], "siftool new")
        _run(["siftool", "add", str(out), str(deffile), "--datatype", "1", "--groupid", "1",
              "--filename", "Singularity"], "siftool add (definition)")
        _run(["siftool", "add", str(out), str(sqfs), "--datatype", "4", "--parttype", "2",
              "--partfs", "1", "--partarch", "2", "--groupid", "1"],
             "siftool add (root filesystem)", timeout=SQUASHFS_TIMEOUT)
    finally:
        sqfs.unlink(missing_ok=True)
    with open(out, "r+b") as f:  # the launch line apptainer writes over the header's pad
        f.write(LAUNCH_LINE)


def partition(sif: Path) -> tuple[int, int]:
    """(offset, size) of the SIF's squashfs system partition, from `siftool info`."""
    listing = _run(["siftool", "list", str(sif)], "siftool list").stdout
    for line in listing.splitlines():
        cols = line.split("|")
        if len(cols) >= 5 and cols[0].strip().isdigit() and "Squashfs" in cols[4]:
            info = _run(["siftool", "info", cols[0].strip(), str(sif)], "siftool info").stdout
            offset = re.search(r"Offset:\s*(\d+)", info)
            size = re.search(r"Size:\s*(\d+)", info)
            if offset and size:
                return int(offset.group(1)), int(size.group(1))
    raise LaunchError(f"{sif} has no squashfs system partition")


def verify(sif: Path) -> None:
    with open(sif, "rb") as f:
        head = f.read(len(LAUNCH_LINE) + 64)
    if not head.startswith(LAUNCH_LINE) or b"SIF_MAGIC" not in head:
        raise LaunchError(f"{sif} is not a SIF file")
    partition(sif)


def publish(tmp: Path, target: Path, deffile_text: str) -> None:
    """Rename a verified SIF into place, keeping the one it replaces as <name>.prev.sif."""
    if target.exists():
        prev = target.with_name(target.stem + ".prev.sif")
        prev.unlink(missing_ok=True)
        os.link(target, prev)
    os.replace(tmp, target)
    dtmp = target.with_name(f".{target.stem}.def.tmp-{os.getpid()}")
    dtmp.write_text(deffile_text)
    os.replace(dtmp, target.with_suffix(".def"))


def _current(target: Path, image: str) -> bool:
    try:
        same = f"From: {image}\n" in target.with_suffix(".def").read_text()
    except OSError:
        return False
    if not same or not target.is_file():
        return False
    try:
        verify(target)
    except LaunchError:
        return False
    return True


def make_sif(inv, client, vendor: str, *, work: Path | None = None,
             say=lambda line: None) -> SifResult:
    """The vendor's SIF from the image the registry serves for <vendor> (the newest build)."""
    from warpforge_launch.lab import images, registry

    repo = images.repository(inv)
    name = repo.split("/", 1)[1]
    tag = vendor
    digest = registry.manifest_digest(inv.registry, name, tag)
    if digest is None:
        raise UsageError(f"the registry has no {repo}:{tag}", hint="invoke images")
    image = f"{repo}@{digest}"
    target = target_path(inv, vendor)
    started = time.monotonic()
    if _current(target, image):
        return SifResult(vendor, str(target), image, "unchanged", target.stat().st_size)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {target.parent}: {e.strerror}") from None
    tool = runtime_tool()
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with tempfile.TemporaryDirectory(prefix=f"wf-sif-{vendor}-", dir=work) as scratch:
            if tool:
                say(f"[{vendor}] {os.path.basename(tool)} build from {image}")
                _run([tool, "build", "--force", str(tmp), f"docker://{image}"],
                     f"{tool} build", timeout=SQUASHFS_TIMEOUT,
                     env={**os.environ, "APPTAINER_NOHTTPS": "1", "SINGULARITY_NOHTTPS": "1"})
                config = {}
            else:
                if _pull_needed(client, image):
                    say(f"[{vendor}] pulling {image}")
                    client.images.pull(image)
                root = Path(scratch) / "rootfs"
                say(f"[{vendor}] exporting the root filesystem of {image}")
                config = export_rootfs(client, image, root)
                deffile = Path(scratch) / "Singularity"
                deffile.write_text(definition(image, config))
                write_metadata(root, config, deffile.read_text())
                say(f"[{vendor}] mksquashfs + siftool -> {tmp.name}")
                assemble(root, deffile, tmp)
            verify(tmp)
            publish(tmp, target, definition(image, config))
    finally:
        tmp.unlink(missing_ok=True)
    return SifResult(vendor, str(target), image, "built", target.stat().st_size,
                     round(time.monotonic() - started, 2))


def _pull_needed(client, image: str) -> bool:
    import docker

    try:
        client.images.get(image)
        return False
    except docker.errors.ImageNotFound:
        return True



def configured(inv) -> dict[str, Path]:
    """Every SIF path a Slurm scheduler with a container runtime will run."""
    paths = {}
    for name, entry in inv.schedulers.items():
        if entry.type == "slurm" and getattr(entry.config, "runtime", "none") != "none":
            for vendor in ("nvidia", "amd", "cpu"):
                p = getattr(entry.config, f"image_{vendor}", None)
                if p:
                    paths[f"{name}.image_{vendor}"] = Path(p).expanduser()
    return paths


def doctor(inv) -> list[tuple[str, Path, bool]]:
    """(setting, path, present) for every configured SIF."""
    return [(k, p, p.is_file()) for k, p in configured(inv).items()]


def command(*, inventory: str = "", vendors: str = "", check: bool = False,
            as_json: bool = False) -> int:
    """invoke sif: one line per vendor (path, size, the image digest it holds); with check,
    only say which configured SIFs are missing (exit 1 if any)."""
    import sys

    from warpforge_launch.lab.images import _vendors
    from warpforge_launch.lab.registry import engine, run_step

    def body() -> int:
        from warpforge_launch import inventory as inv_mod

        inv = inv_mod.load(inventory or None)
        if check:
            rows = doctor(inv)
            if as_json:
                print(json.dumps([{"setting": k, "path": str(p), "present": ok}
                                  for k, p, ok in rows], indent=2))
            else:
                for k, p, ok in rows:
                    print(f"{k}: {p} {'present' if ok else 'MISSING (run: invoke sif)'}")
            return 0 if all(ok for _, _, ok in rows) else 1
        client = engine()
        results = [make_sif(inv, client, v, say=lambda s: print(s, file=sys.stderr, flush=True))
                   for v in _vendors(inv, vendors)]
        if as_json:
            print(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
        else:
            for r in results:
                print(f"{r.vendor}: {r.path} {r.outcome} ({r.size / 2**20:.1f} MiB) "
                      f"from {r.image}")
        return 0

    return run_step("sif", body)
