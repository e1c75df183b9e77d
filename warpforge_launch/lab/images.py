"""The snakegrinder images: build (Docker SDK), check by running, push, verify by digest.

One image per GPU vendor from containers/<vendor>/Dockerfile. The build context is staged
from the dist with hard links: venv/ (the bundled venv, large, rarely changed) and app/ (the
rest: launcher, binary, build info), which the Dockerfiles copy as two layers, so a new
binary pushes only the small layer. Each image carries a build key (the hash of the dist,
the Dockerfile and the build arguments): an image whose key is unchanged is neither rebuilt
nor re-checked, and a tag whose digest the registry already serves is not pushed again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from warpforge_launch.errors import InfrastructureError, LaunchError, UsageError

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY_LABEL = "org.warpforge.build-key"
CHECK_TIMEOUT = 300.0
_TAG_BAD = re.compile(r"[^A-Za-z0-9_.-]")

Say = Callable[[str], None]


def _say_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclasses.dataclass
class ImageResult:
    vendor: str
    ref: str  # <registry>/<name>:<vendor>-<version>
    digest: str | None = None
    image_id: str = ""
    built: bool = False
    checked: bool = False
    pushed: bool = False
    seconds: float = 0.0


def containers_dir(inv) -> Path:
    d = inv.images.containers_dir
    return Path(d).expanduser() if d else REPO_ROOT / "containers"


def dockerfile(inv, vendor: str) -> Path:
    path = containers_dir(inv) / vendor / "Dockerfile"
    if not path.is_file():
        raise UsageError(f"no Dockerfile for {vendor} at {path}",
                         hint="set images.containers_dir to the directory holding "
                              "<vendor>/Dockerfile")
    return path


def build_info(dist: Path) -> dict:
    try:
        return json.loads((dist / "BUILD-INFO.json").read_text())
    except (OSError, ValueError):
        return {}


def version_of(inv, dist: Path, dist_hash: str) -> str:
    """images.version, else the dist's BUILD-INFO version, else its content hash."""
    v = inv.images.version or build_info(dist).get("version") or f"g{dist_hash[:12]}"
    return _TAG_BAD.sub("-", str(v))[:100]


def git_commit(inv, dist: Path) -> str:
    info = build_info(dist)
    for key in ("git_commit", "commit", "revision"):
        if info.get(key):
            return str(info[key])
    source = Path(inv.build.source).expanduser()
    try:
        r = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                           text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return r.stdout.strip() if r.returncode == 0 else "unknown"


def repository(inv) -> str:
    return f"{inv.registry.address}/{inv.images.name}"


def stage_context(dist: Path, ctx: Path) -> Path:
    """ctx/venv = dist/venv, ctx/app = the rest of the dist; hard links where possible."""
    if ctx.exists():
        shutil.rmtree(ctx)
    ctx.mkdir(parents=True)

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(dist / "venv", ctx / "venv", symlinks=True, copy_function=link)
    (ctx / "app").mkdir()
    for child in sorted(dist.iterdir()):
        if child.name == "venv":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.copytree(child, ctx / "app" / child.name, symlinks=True, copy_function=link)
        elif child.is_symlink():
            os.symlink(os.readlink(child), ctx / "app" / child.name)
        else:
            link(child, ctx / "app" / child.name)
    return ctx


@dataclasses.dataclass
class Plan:
    """What one vendor's build is made from (its hash is the build key)."""

    vendor: str
    dockerfile: Path
    buildargs: dict[str, str]
    tags: tuple[str, ...]  # <vendor>-<version>, <vendor>

    @property
    def key(self) -> str:
        text = json.dumps([self.dockerfile.read_text(), self.buildargs], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def plan(inv, dist: Path, dist_hash: str, vendor: str) -> Plan:
    version = version_of(inv, dist, dist_hash)
    args = {"VERSION": version, "GIT_COMMIT": git_commit(inv, dist), "DIST_HASH": dist_hash}
    base = inv.images.base_images.get(vendor)
    if base:
        args["BASE_IMAGE"] = base
    return Plan(vendor, dockerfile(inv, vendor), args, (f"{vendor}-{version}", vendor))


def _local_image(client, ref: str):
    import docker

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def build(client, p: Plan, ctx: Path, ref: str, say: Say) -> str:
    """docker build through the engine's API (cache on); streams the steps; the image id."""
    image_id = None
    args = {**p.buildargs, "BUILD_KEY": p.key}
    stream = client.api.build(path=str(ctx), dockerfile=str(p.dockerfile), tag=ref,
                              buildargs=args, network_mode="none", rm=True, forcerm=True,
                              decode=True, pull=False)
    for chunk in stream:
        if "error" in chunk:
            raise LaunchError(f"building {p.vendor} failed: {chunk['error'].strip()}")
        line = (chunk.get("stream") or "").rstrip()
        if line.startswith("Step ") or line.startswith("Successfully built"):
            say(f"[{p.vendor}] {line}")
        aux = chunk.get("aux") or {}
        image_id = aux.get("ID", image_id)
    if image_id is None:
        image = _local_image(client, ref)
        if image is None:
            raise LaunchError(f"building {p.vendor} produced no image")
        image_id = image.id
    return image_id


def run_once(client, image: str, argv: list[str], timeout: float = CHECK_TIMEOUT
             ) -> tuple[int, str, str]:
    """Run the image's entrypoint with argv (no network); exit code, stdout, stderr."""
    c = client.containers.create(image, argv, network_disabled=True, network_mode="none")
    try:
        c.start()
        try:
            code = c.wait(timeout=timeout).get("StatusCode", -1)
        except Exception as e:  # requests' read timeout: the check hung
            raise LaunchError(f"{image} {' '.join(argv)} did not end within "
                              f"{timeout:.0f}s") from e
        out = c.logs(stdout=True, stderr=False).decode(errors="replace")
        err = c.logs(stdout=False, stderr=True).decode(errors="replace")
        return code, out, err
    finally:
        c.remove(force=True)


def check(client, vendor: str, image: str, say: Say) -> None:
    """`--help`, then a trace of the example: the image works before it is pushed."""
    for argv, want in ((["--help"], None),
                       (["--trace-example", "--out", "/tmp/warpforge-check"], "SUCCESS")):
        code, out, err = run_once(client, image, argv)
        if code != 0 or (want and want not in out):
            last = (err.strip() or out.strip()).splitlines()[-1:] or [f"exit {code}"]
            raise LaunchError(f"{vendor} image check `{' '.join(argv)}` failed "
                              f"(exit {code}): {last[0]}")
        say(f"[{vendor}] check ok: snakegrinder {' '.join(argv)}")


def push(client, repo: str, tag: str, say: Say) -> str | None:
    """Push one tag; the digest the engine reports."""
    digest = None
    for chunk in client.api.push(repo, tag=tag, stream=True, decode=True):
        if "error" in chunk:
            raise InfrastructureError(f"pushing {repo}:{tag} failed: "
                                      f"{chunk['error'].strip()}")
        status = chunk.get("status", "")
        if status in ("Pushed", "Layer already exists"):
            say(f"[{tag}] {chunk.get('id', '')}: {status}")
        digest = (chunk.get("aux") or {}).get("Digest", digest)
    return digest


def _verified_file() -> Path:
    from warpforge_launch.lab.manifest import state_dir

    return state_dir() / "images" / "checked.json"


def _checked_ids() -> set[str]:
    try:
        return set(json.loads(_verified_file().read_text()))
    except (OSError, ValueError):
        return set()


def _mark_checked(image_id: str) -> None:
    path = _verified_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = sorted(_checked_ids() | {image_id})[-200:]
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(ids))
    os.replace(tmp, path)


def make_images(inv, client, dist: Path, *, vendors=None, push_images: bool = True,
                check_images: bool = True, say: Say = _say_stderr) -> list[ImageResult]:
    """Build, check, tag, push and verify the image of every vendor (check_images=False only
    for the benchmark, which compares build + push with the Docker CLI's)."""
    from warpforge_launch.lab import manifest

    dist = manifest.check_dist(dist)
    dist_hash = manifest.scan(dist, cache=manifest.default_cache(dist)).hash
    repo = repository(inv)
    ctx = None
    results = []
    try:
        for vendor in vendors or inv.images.vendors:
            started = time.monotonic()
            p = plan(inv, dist, dist_hash, vendor)
            res = ImageResult(vendor, f"{repo}:{p.tags[0]}")
            image = _local_image(client, res.ref)
            if image is None or image.labels.get(KEY_LABEL) != p.key:
                if ctx is None:
                    say(f"staging the build context from {dist}")
                    ctx = stage_context(dist, manifest.state_dir() / "images" / "context")
                say(f"[{vendor}] building {res.ref}")
                res.image_id, res.built = build(client, p, ctx, res.ref, say), True
                image = client.images.get(res.image_id)
            res.image_id = image.id
            for tag in p.tags:
                image.tag(repo, tag)
            # an image the registry serves was checked before it was pushed
            if check_images and not (push_images and _served(inv.registry, repo, p.tags, image)) \
                    and image.id not in _checked_ids():
                check(client, vendor, image.id, say)
                _mark_checked(image.id)
                res.checked = True
            if push_images:
                res.digest, res.pushed = _push_verified(client, inv.registry, repo, p.tags,
                                                        image, say)
            res.seconds = round(time.monotonic() - started, 2)
            results.append(res)
    finally:
        if ctx is not None:
            shutil.rmtree(ctx, ignore_errors=True)
    return results


def _local_digests(repo: str, image) -> set[str]:
    return {d.split("@", 1)[1] for d in image.attrs.get("RepoDigests", [])
            if d.split("@", 1)[0] == repo}


def _served(cfg, repo: str, tags, image) -> bool:
    """Does the registry serve this very image under every tag?"""
    from warpforge_launch.lab.registry import manifest_digest

    local = _local_digests(repo, image)
    name = repo.split("/", 1)[1]
    return bool(local) and all(manifest_digest(cfg, name, t) in local for t in tags)


def _push_verified(client, cfg, repo: str, tags, image, say: Say) -> tuple[str, bool]:
    """Push the tags unless the registry already serves this image for them; then check the
    registry's digest of every tag against the image's."""
    from warpforge_launch.lab.registry import manifest_digest

    name = repo.split("/", 1)[1]
    local = _local_digests(repo, image)
    pushed = False
    digest = None
    for tag in tags:
        served = manifest_digest(cfg, name, tag)
        if served and served in local:
            digest = served
            continue
        say(f"pushing {repo}:{tag}")
        digest = push(client, repo, tag, say) or manifest_digest(cfg, name, tag)
        pushed = True
    for tag in tags:
        served = manifest_digest(cfg, name, tag)
        if served is None or served != digest:
            raise LaunchError(f"the registry serves {served} for {repo}:{tag}, "
                              f"pushed {digest}")
    return digest, pushed


def command(*, inventory: str = "", dist: str = "", vendors: str = "", no_push: bool = False,
            as_json: bool = False) -> int:
    """invoke images: one line per vendor (ref, digest, what was done)."""
    from warpforge_launch.lab.registry import engine, run_step

    def body() -> int:
        from warpforge_launch import inventory as inv_mod
        from warpforge_launch.lab.commands import dist_dir

        inv = inv_mod.load(inventory or None)
        chosen = _vendors(inv, vendors)
        client = engine()
        results = make_images(inv, client, dist_dir(inv, dist or None), vendors=chosen,
                              push_images=not no_push)
        if as_json:
            print(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
        for r in results:
            did = ", ".join(w for w, on in (("built", r.built), ("checked", r.checked),
                                             ("pushed", r.pushed)) if on) or "unchanged"
            if not as_json:
                print(f"{r.vendor}: {r.ref} {r.digest or '(not pushed)'} [{did}] {r.seconds}s")
        return 0

    return run_step("images", body)


def _vendors(inv, vendors: str) -> tuple[str, ...]:
    chosen = tuple(v.strip() for v in vendors.split(",") if v.strip()) or inv.images.vendors
    unknown = [v for v in chosen if v not in ("nvidia", "amd")]
    if unknown:
        raise UsageError(f"unknown vendor {', '.join(unknown)} (nvidia, amd)")
    return chosen
