#!/usr/bin/env python3
"""Build the stand-in snakegrinder dist (its ``./gradlew :snakegrinder-dist:assembleDist``).

    python3 examples/snakegrinder/build.py [--out DIR]

Writes ``snakegrinder-dist/build/dist`` (relative to the current directory) unless --out says
otherwise, in the real dist's layout:

    bin/snakegrinder          bash launcher: sets PYTHONPATH / LD_LIBRARY_PATH, execs the bin
    bin/snakegrinder-bin      the program (a Python zip application of src/snakegrinder)
    venv/lib/pythonX.Y/site-packages/   torch + numpy and their dependencies, pruned
    BUILD-INFO.json           what went in: pins, python, source of the packages, sizes

Where the packages come from (the first that applies):
  1. --site-packages DIR     a directory holding them (e.g. another dist's site-packages);
  2. this interpreter        if it already has the pinned torch and numpy installed
                             (a developer's or CI's venv): their files are reused, no install;
  3. a build cache           ``pip install --target`` of the pins, once per Python version
                             and pin set, under --cache-dir (default ~/.cache/warpforge).
Files are hard-linked from the source where the filesystem allows (a build takes seconds and no
extra disk), else copied. Big shared libraries are stripped of debug symbols once and the
stripped copy is cached. The dist is staged beside --out, checked with ``--trace-example``,
and only then swapped in, so a failed build never leaves a half-built dist behind.

Standard library only: it runs with the interpreter the dist is for (Python 3.11: the bundled
torch wheel is cp311). Exit codes: 0 built, 1 build failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
LAUNCHER = HERE / "launcher" / "snakegrinder"
PINS_FILE = HERE / "pins.txt"
DEFAULT_OUT = Path("snakegrinder-dist/build/dist")
PIP_TIMEOUT = 1800
CHECK_TIMEOUT = 300
STRIP_MIN_BYTES = 1 << 20
# Only torch's own libraries: wheels' vendored libraries (numpy.libs/*, patched by auditwheel)
# break when binutils strip rewrites them ("ELF load command ... not page-aligned").
STRIPPABLE = re.compile(r"^torch/lib/[^/]+\.so(\.[0-9]+)*$")

# Never needed to import torch and trace: C++ headers, CMake files, C++ test programs and test
# libraries, test suites of the dependencies. Everything else stays (torch imports widely).
PRUNE = [re.compile(p) for p in (
    r"^torch/(include|share|test)/",
    r"^torch/bin/(?!torch_shm_manager$)",  # C++ test programs and protoc; keep the shm manager
    r"^torch/lib/lib(aoti_custom_ops|backend_with_compiler|jitbackend_test|torchbind_test)\.so$",
    r"^(numpy|sympy|networkx|mpmath)/(.+/)?tests/",
    r"^numpy/_core/include/",
    r"^numpy/f2py/",
    r"^torchgen/packaged/",
    r"(^|/)[^/]+\.(a|lib|pdb)$",
    r"^\.\./",  # console scripts outside site-packages (RECORD paths like ../../../bin/x)
)]


class BuildError(Exception):
    pass


def read_pins() -> dict[str, str]:
    pins = {}
    for line in PINS_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def log(msg: str) -> None:
    print(f"[standin-build] {msg}", flush=True)


# -- where the packages come from ------------------------------------------------------
def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version_matches(installed: str, pinned: str) -> bool:
    return installed == pinned or installed.split("+", 1)[0] == pinned


def installed_closure(pins: dict[str, str]) -> list[metadata.Distribution] | None:
    """The pinned distributions and everything they require, if all installed here."""
    dists = {_norm(d.metadata["Name"]): d for d in metadata.distributions()}
    for name, version in pins.items():
        d = dists.get(_norm(name))
        if d is None or not _version_matches(d.version, version):
            return None
    todo, seen = [_norm(n) for n in pins], {}
    while todo:
        name = todo.pop()
        if name in seen or name not in dists:
            continue
        seen[name] = dists[name]
        for req in dists[name].requires or []:
            if "extra ==" in req or 'extra=="' in req:
                continue
            todo.append(_norm(re.split(r"[\s;<>=!~\[(]", req.strip(), maxsplit=1)[0]))
    return list(seen.values())


def files_from_dists(dists: list[metadata.Distribution]) -> tuple[Path, list[str]]:
    roots = {Path(d.locate_file("")).resolve() for d in dists}
    if len(roots) != 1:
        raise BuildError(f"the pinned packages live in several directories: {sorted(roots)}")
    root = roots.pop()
    files = []
    for d in dists:
        if not d.files:
            raise BuildError(f"{d.metadata['Name']} has no RECORD; cannot tell its files")
        files.extend(str(f).replace(os.sep, "/") for f in d.files)
    return root, sorted(set(files))


def files_in_dir(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)).replace(os.sep, "/")
                  for p in root.rglob("*") if p.is_file() or p.is_symlink())


def pip_cache_site(pins: dict[str, str], cache: Path) -> Path:
    """``pip install --target`` the pins once per (python, pins); later builds reuse it."""
    key = hashlib.sha256(json.dumps([sys.version_info[:2], pins]).encode()).hexdigest()[:12]
    pyver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    site = cache / f"site-py{pyver}-{key}"
    if (site / ".complete").exists():
        return site
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=site.name + ".", dir=cache))
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--no-input",
            "--disable-pip-version-check", "--no-warn-script-location", "--target", str(tmp)]
    argv += [f"{n}=={v}" for n, v in pins.items()]
    log(f"installing {' '.join(argv[-len(pins):])} into the build cache (once)")
    try:
        subprocess.run(argv, check=True, timeout=PIP_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(f"pip install of the pins failed (exit {exc.returncode})") from None
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(f"pip install of the pins timed out after {PIP_TIMEOUT}s") from None
    (tmp / ".complete").write_text(json.dumps(pins) + "\n")
    if site.exists():
        shutil.rmtree(site)
    tmp.rename(site)
    return site


# -- copying ---------------------------------------------------------------------------
def pruned(rel: str) -> bool:
    return any(p.search(rel) for p in PRUNE)


def place(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def stripped_copy(src: Path, cache: Path, strip: str) -> Path | None:
    """A debug-stripped copy of a shared library, cached by the source's identity."""
    st = src.stat()
    key = hashlib.sha256(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    out = cache / "stripped" / f"{key[:20]}-{src.name}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    shutil.copy2(src, tmp)
    try:
        subprocess.run([strip, "--strip-unneeded", str(tmp)], check=True, timeout=300,
                       stdin=subprocess.DEVNULL, capture_output=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        tmp.unlink(missing_ok=True)
        return None
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    tmp.rename(out)
    return out


def copy_site(root: Path, files: list[str], dest: Path, *, prune: bool, strip: str | None,
              link: bool, cache: Path) -> dict:
    stats = {"files": 0, "bytes": 0, "pruned_files": 0, "pruned_bytes": 0, "stripped_bytes": 0}
    for rel in files:
        src = root / rel
        if not (src.is_file() or src.is_symlink()):
            continue
        size = src.lstat().st_size
        if rel.startswith("../") or (prune and pruned(rel)):
            stats["pruned_files"] += 1
            stats["pruned_bytes"] += size
            continue
        chosen = src
        if strip and STRIPPABLE.match(rel) and size >= STRIP_MIN_BYTES and not src.is_symlink():
            s = stripped_copy(src, cache, strip)
            if s is not None and s.stat().st_size < size:
                stats["stripped_bytes"] += size - s.stat().st_size
                chosen = s
        place(chosen, dest / rel, link)
        stats["files"] += 1
        stats["bytes"] += chosen.lstat().st_size
    return stats


# -- the program and the launcher ------------------------------------------------------
def write_program(path: Path) -> None:
    """bin/snakegrinder-bin: a zip application of src/snakegrinder (deterministic bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            main = "import sys\nfrom snakegrinder.cli import main\nsys.exit(main())\n"
            zf.writestr(zipfile.ZipInfo("__main__.py", (1980, 1, 1, 0, 0, 0)), main)
            for f in sorted((SRC / "snakegrinder").rglob("*.py")):
                info = zipfile.ZipInfo(str(f.relative_to(SRC)), (1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, f.read_bytes())
    path.chmod(0o755)


def write_launcher(path: Path, pyver: str) -> None:
    major, minor = pyver.split(".")
    text = (LAUNCHER.read_text().replace("@PYVER@", pyver)
            .replace("@PYMAJOR@", major).replace("@PYMINOR@", minor))
    path.write_text(text)
    path.chmod(0o755)


def tree_size(root: Path) -> int:
    seen, total = set(), 0
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def check(dist: Path) -> None:
    """The dist must trace the example on its own: minimal environment, nothing inherited."""
    with tempfile.TemporaryDirectory(prefix="standin-check-") as tmp:
        env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
               "HOME": tmp, "LANG": "C.UTF-8"}
        argv = [str(dist / "bin" / "snakegrinder"), "--trace-example", "--out", f"{tmp}/out"]
        try:
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                                  timeout=CHECK_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BuildError(f"dist check timed out after {CHECK_TIMEOUT}s") from None
        mlir = Path(tmp, "out", "model.mlir")
        if proc.returncode != 0 or "SUCCESS:" not in proc.stdout or not mlir.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise BuildError(f"dist check failed (exit {proc.returncode}): " + " | ".join(tail))
        if "stablehlo.dot_general" not in mlir.read_text():
            raise BuildError("dist check: model.mlir lacks stablehlo.dot_general")


# -- main ------------------------------------------------------------------------------
def build(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    pins = read_pins()
    pyver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    out = Path(args.out).absolute()
    cache = Path(args.cache_dir).expanduser().absolute()

    if args.site_packages:
        root = Path(args.site_packages).absolute()
        if not (root / "torch").is_dir():
            raise BuildError(f"--site-packages {root} holds no torch package")
        files, source = files_in_dir(root), f"directory {root}"
    else:
        dists = installed_closure(pins)
        if dists is not None:
            root, files = files_from_dists(dists)
            source = f"installed in {sys.prefix} ({len(dists)} distributions)"
        else:
            root = pip_cache_site(pins, cache)
            files, source = files_in_dir(root), f"build cache {root}"
    log(f"packages: {source}")

    strip = None if args.no_strip else shutil.which("strip")
    stage = out.parent / f".{out.name}.partial"
    if stage.exists():
        shutil.rmtree(stage)
    site = stage / "venv" / "lib" / f"python{pyver}" / "site-packages"
    stats = copy_site(root, files, site, prune=not args.no_prune, strip=strip,
                      link=not args.copy, cache=cache)
    write_program(stage / "bin" / "snakegrinder-bin")
    write_launcher(stage / "bin" / "snakegrinder", pyver)
    size = tree_size(stage)
    info = {
        "name": "snakegrinder", "flavor": "stand-in", "version": _version(),
        "python": pyver, "pins": pins, "packages_from": source,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "size_bytes": size, **stats,
    }
    (stage / "BUILD-INFO.json").write_text(json.dumps(info, indent=2) + "\n")
    copied = time.monotonic() - started
    if not args.no_check:
        log("checking the dist: bin/snakegrinder --trace-example")
        check(stage)
    old = out.parent / f".{out.name}.old"
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
    stage.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    info["seconds"] = round(time.monotonic() - started, 2)
    info["assemble_seconds"] = round(copied, 2)
    log(f"dist: {out}  ({size / 2**20:.0f} MiB, {stats['files']} files; pruned "
        f"{stats['pruned_bytes'] / 2**20:.0f} MiB, stripped {stats['stripped_bytes'] / 2**20:.0f}"
        f" MiB) in {info['seconds']}s")
    return info


def _version() -> str:
    text = (SRC / "snakegrinder" / "__init__.py").read_text()
    m = re.search(r'VERSION = "([^"]+)"', text)
    return m.group(1) if m else "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="build.py", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--out", default=str(DEFAULT_OUT),
                   help="dist directory (default: snakegrinder-dist/build/dist)")
    p.add_argument("--site-packages", help="take torch/numpy from this directory")
    p.add_argument("--cache-dir", default=os.environ.get(
        "SNAKEGRINDER_BUILD_CACHE", "~/.cache/warpforge/standin-build"),
        help="pip target and stripped-library cache (env SNAKEGRINDER_BUILD_CACHE)")
    p.add_argument("--copy", action="store_true", help="copy files instead of hard-linking")
    p.add_argument("--no-prune", action="store_true", help="keep headers, tests and the like")
    p.add_argument("--no-strip", action="store_true", help="keep debug symbols in libraries")
    p.add_argument("--no-check", action="store_true", help="skip the --trace-example check")
    p.add_argument("--json", action="store_true", help="print BUILD-INFO as JSON at the end")
    args = p.parse_args(argv)
    if sys.version_info[:2] != (3, 11):
        log(f"warning: building with Python {platform.python_version()}; the pinned torch "
            "wheel on this machine is for 3.11")
    try:
        info = build(args)
    except BuildError as exc:
        print(f"[standin-build] FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    if args.json:
        print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
