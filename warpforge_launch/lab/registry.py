"""The lab's image registry: registry v2 in a container on the box that runs it, read over its
HTTP API, and trusted by the boxes' Docker engines.

The container is driven through the Docker SDK (never a docker command line): host
networking, `restart: always`, and the data directory bind-mounted at /var/lib/registry, so
the registry comes back with its data after the engine or the box restarts. `up` is
idempotent: the container carries a label with the hash of the settings it was made with;
the same settings leave it alone, new ones replace the container (the data stays).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any

from warpforge_launch.errors import InfrastructureError, LaunchError, UsageError

SPEC_LABEL = "org.warpforge.registry-spec"
DATA_IN_CONTAINER = "/var/lib/registry"
CONFIG_IN_CONTAINER = "/etc/docker/registry/config.yml"
MANIFEST_TYPES = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json"))


def engine(url: str | None = None, *, timeout: float = 300.0):
    """A Docker SDK client for the engine at url (default: DOCKER_HOST, else the local one)."""
    import docker

    where = url or os.environ.get("DOCKER_HOST") or "the local Docker engine"
    try:
        client = (docker.DockerClient(base_url=url, timeout=int(timeout)) if url
                  else docker.from_env(timeout=int(timeout)))
        client.ping()
    except Exception as e:  # the SDK raises DockerException, requests' and socket errors
        raise InfrastructureError(f"Docker engine {where} is unreachable: {_short(e)}",
                                  hint="is dockerd running? (DOCKER_HOST names the socket)"
                                  ) from None
    return client


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


def engine_url(inv) -> str | None:
    """The engine that runs the registry: registry.docker_host, else its box's, else local."""
    cfg = inv.registry
    if cfg.docker_host:
        return cfg.docker_host
    if cfg.box:
        box = inv.select_boxes([cfg.box])[0]
        if box.transport == "ssh":
            user = f"{box.user}@" if box.user else ""
            return f"ssh://{user}{box.host}:{box.port}"
    return None


def desired(cfg) -> dict[str, Any]:
    """Everything the container is created from; its hash is the container's label."""
    return {"image": cfg.image, "name": cfg.container, "network_mode": "host",
            "restart_policy": {"Name": "always"},
            "volumes": {os.path.expanduser(cfg.data_dir): {"bind": DATA_IN_CONTAINER,
                                                           "mode": "rw"}},
            "environment": {"REGISTRY_HTTP_ADDR": f"{cfg.bind}:{cfg.port}",
                            "REGISTRY_STORAGE_DELETE_ENABLED": "true"}}


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def up(cfg, client, *, wait: float = 60.0) -> str:
    """Make the registry run; returns what was done: unchanged, started, created, replaced."""
    import docker

    spec = desired(cfg)
    key = spec_hash(spec)
    action = "created"
    try:
        c = client.containers.get(cfg.container)
    except docker.errors.NotFound:
        c = None
    if c is not None:
        if c.labels.get(SPEC_LABEL) == key:
            if c.status == "running":
                action = "unchanged"
            else:
                c.start()
                action = "started"
            wait_ready(cfg, wait)
            return action
        c.remove(force=True)
        action = "replaced"
    _ensure_image(client, cfg.image)
    if cfg.box is None and cfg.docker_host is None:
        os.makedirs(os.path.expanduser(cfg.data_dir), exist_ok=True)
    client.containers.run(detach=True, labels={SPEC_LABEL: key}, **spec)
    wait_ready(cfg, wait)
    return action


def _ensure_image(client, image: str) -> None:
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        try:
            client.images.pull(image)
        except docker.errors.APIError as e:
            raise InfrastructureError(f"image {image} is not on the engine and "
                                      f"cannot be pulled: {_short(e)}",
                                      hint="load it (docker load) or set registry.image") from None


def down(cfg, client) -> str:
    """Stop and remove the container; the data directory stays."""
    import docker

    try:
        c = client.containers.get(cfg.container)
    except docker.errors.NotFound:
        return "absent"
    c.remove(force=True)
    return "removed"


def url(cfg, path: str = "") -> str:
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "") else cfg.host
    return f"http://{host}:{cfg.port}/v2/{path}"


def wait_ready(cfg, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if httpx.get(url(cfg), timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError as e:
            last = _short(e)
        time.sleep(0.2)
    raise InfrastructureError(f"registry {cfg.address} did not answer within {timeout:.0f}s"
                              + (f": {last}" if last else ""))


def manifest_digest(cfg, repo: str, reference: str, *, timeout: float = 10.0) -> str | None:
    """The digest the registry serves for repo:reference (None: no such tag)."""
    import httpx

    try:
        r = httpx.head(url(cfg, f"{repo}/manifests/{reference}"), timeout=timeout,
                       headers={"Accept": MANIFEST_TYPES})
    except httpx.HTTPError as e:
        raise InfrastructureError(f"registry {cfg.address} is unreachable: {_short(e)}") from None
    if r.status_code == 404:
        return None
    if r.status_code != 200:
        raise LaunchError(f"registry {cfg.address}: {repo}:{reference} answered {r.status_code}")
    return r.headers.get("Docker-Content-Digest")


@dataclasses.dataclass
class Status:
    container: str  # running, exited, absent, ...
    reachable: bool
    repositories: dict[str, dict[str, str | None]]  # repo -> tag -> digest
    disk_bytes: int | None


def status(cfg, client) -> Status:
    import docker
    import httpx

    try:
        c = client.containers.get(cfg.container)
        state = c.status
    except docker.errors.NotFound:
        c, state = None, "absent"
    repos: dict[str, dict[str, str | None]] = {}
    try:
        catalog = httpx.get(url(cfg, "_catalog"), timeout=10.0).json().get("repositories") or []
        reachable = True
    except (httpx.HTTPError, ValueError):
        catalog, reachable = [], False
    for repo in catalog:
        tags = httpx.get(url(cfg, f"{repo}/tags/list"), timeout=10.0).json().get("tags") or []
        repos[repo] = {t: manifest_digest(cfg, repo, t) for t in sorted(tags)}
    return Status(state, reachable, repos, disk_use(c) if state == "running" else None)


def disk_use(container) -> int | None:
    """Bytes under the registry's data directory, measured inside its container."""
    r = container.exec_run(["du", "-sk", DATA_IN_CONTAINER])
    try:
        return int(r.output.split()[0]) * 1024 if r.exit_code == 0 else None
    except (ValueError, IndexError):
        return None


def gc(cfg, client) -> tuple[int | None, int | None]:
    """Delete blobs no tag refers to (registry garbage-collect); returns disk use before/after.

    Run it when nothing is being pushed: the registry's collector does not lock out writers."""
    import docker

    try:
        c = client.containers.get(cfg.container)
    except docker.errors.NotFound:
        raise UsageError("the registry container does not exist",
                         hint="invoke registry.up") from None
    if c.status != "running":
        raise LaunchError(f"the registry container is {c.status}",
                          hint="invoke registry.up")
    before = disk_use(c)
    r = c.exec_run(["registry", "garbage-collect", "--delete-untagged", CONFIG_IN_CONTAINER])
    if r.exit_code != 0:
        lines = r.output.decode(errors="replace").strip().splitlines()
        raise LaunchError(f"garbage-collect failed: "
                          f"{lines[-1] if lines else r.exit_code}")
    return before, disk_use(c)


# ---- trust: the boxes' dockerd accepts the registry over plain HTTP -------------------------
@dataclasses.dataclass
class TrustResult:
    box: str
    outcome: str  # changed, unchanged, no-docker, failed
    detail: str = ""


def merge_insecure(text: str | None, address: str) -> tuple[dict, bool]:
    """daemon.json with address among insecure-registries; every other key kept as it was.

    Raises ValueError for a file that is not a JSON object (it is never overwritten then)."""
    doc = json.loads(text) if text and text.strip() else {}
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    current = doc.get("insecure-registries", [])
    if not isinstance(current, list):
        raise ValueError("insecure-registries is not a list")
    if address in current:
        return doc, False
    return {**doc, "insecure-registries": [*current, address]}, True


def trust_box(session, cfg, *, stamp: str) -> TrustResult:
    """Merge the registry into one box's daemon.json, keep a backup, restart on change only."""
    name, path = session.name, cfg.daemon_json
    if not session.run(["sh", "-c", "command -v dockerd || command -v docker"],
                       check=False).ok:
        return TrustResult(name, "no-docker", "no dockerd or docker on the box's PATH")
    exists = session.run(["test", "-e", path], check=False).ok
    text = session.run(["cat", path], what=f"reading {path}").out if exists else None
    try:
        doc, changed = merge_insecure(text, cfg.address)
    except ValueError as e:
        return TrustResult(name, "failed", f"{path} is not valid daemon.json ({e}); left as is")
    if not changed:
        return TrustResult(name, "unchanged", f"{cfg.address} already trusted")
    data = (json.dumps(doc, indent=2) + "\n").encode()
    tmp = f"{path}.warpforge-tmp"
    parent = os.path.dirname(path) or "."
    session.run(["mkdir", "-p", parent], what=f"creating {parent}")
    if exists:
        session.run(["cp", "-p", path, f"{path}.bak-{stamp}"], what=f"backing up {path}")
    session.run(["sh", "-c", 'cat > "$1"', "sh", tmp], input=data, what=f"writing {tmp}")
    session.run(["mv", "-f", tmp, path], what=f"replacing {path}")
    r = session.run(list(cfg.docker_restart), check=False)
    if not r.ok:
        return TrustResult(name, "failed", f"{path} updated but restarting dockerd failed: "
                                           f"{r.reason()}")
    return TrustResult(name, "changed", f"{cfg.address} added; dockerd restarted"
                       + (f"; backup {path}.bak-{stamp}" if exists else ""))


def trust(inv, boxes, *, timeouts=None, host_key_policy=None) -> list[TrustResult]:
    """trust_box on every box, in parallel; an unreachable box is a failed row, not a stop."""
    from concurrent.futures import ThreadPoolExecutor

    from warpforge_launch.lab.remote import Sessions

    stamp = time.strftime("%Y%m%d%H%M%S")
    with Sessions(timeouts=timeouts, host_key_policy=host_key_policy) as sessions:
        def one(box) -> TrustResult:
            try:
                return trust_box(sessions.get(box), inv.registry, stamp=stamp)
            except LaunchError as e:
                return TrustResult(box.name, "failed", str(e))

        with ThreadPoolExecutor(max_workers=max(1, inv.lab.parallel)) as pool:
            return list(pool.map(one, boxes))


# ---- task bodies: inventory -> work -> one line per result -> exit code ---------------------
def run_step(step: str, fn) -> int:
    """fn's exit code; a LaunchError is one line naming the step and the cause (+ hint)."""
    import sys

    try:
        return fn()
    except LaunchError as e:
        from warpforge_launch.output import print_error

        print_error(f"{step}: {e}", hint=e.hint)
        return e.exit_code
    except Exception as e:  # the Docker SDK's and requests' errors: one line, no traceback
        module = type(e).__module__
        if not module.startswith(("docker.", "requests.", "urllib3.")):
            raise
        unreachable = module.startswith(("requests.", "urllib3.")) or "onnection" in str(e)
        print(f"error: {step}: Docker engine: {_short(e)}", file=sys.stderr)
        return 3 if unreachable else 1


def _emit(as_json: bool, data, lines) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        for line in lines:
            print(line)


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


def command(action: str, *, inventory: str = "", as_json: bool = False) -> int:
    """registry.up / down / status / gc."""
    def body() -> int:
        from warpforge_launch import inventory as inv_mod

        inv = inv_mod.load(inventory or None)
        cfg = inv.registry
        client = engine(engine_url(inv))
        if action == "up":
            done = up(cfg, client)
            _emit(as_json, {"registry": cfg.address, "action": done},
                  [f"registry {cfg.address}: {done} (container {cfg.container}, "
                   f"data {cfg.data_dir})"])
        elif action == "down":
            done = down(cfg, client)
            _emit(as_json, {"registry": cfg.address, "action": done},
                  [f"registry {cfg.address}: {done} (data kept in {cfg.data_dir})"])
        elif action == "gc":
            before, after = gc(cfg, client)
            freed = (before - after) if before is not None and after is not None else None
            _emit(as_json, {"registry": cfg.address, "before": before, "after": after},
                  [f"registry {cfg.address}: gc {_size(before)} -> {_size(after)} "
                   f"(freed {_size(freed)})"])
        else:
            st = status(cfg, client)
            lines = [f"registry {cfg.address}: container {st.container}, "
                     f"{'answering' if st.reachable else 'not answering'}, "
                     f"disk {_size(st.disk_bytes)}"]
            for repo, tags in sorted(st.repositories.items()):
                lines += [f"  {repo}:{tag}  {digest}" for tag, digest in tags.items()]
            _emit(as_json, dataclasses.asdict(st) | {"registry": cfg.address}, lines)
            return 0 if st.container == "running" and st.reachable else 3
        return 0

    return run_step(f"registry.{action}", body)


def trust_command(*, boxes: str = "", inventory: str = "", accept_new: bool = False,
                  as_json: bool = False) -> int:
    """registry.trust: exit 1 when a reachable box with Docker could not be updated."""
    def body() -> int:
        from warpforge_launch import inventory as inv_mod
        from warpforge_launch.lab.remote import Timeouts

        inv = inv_mod.load(inventory or None)
        selected = inv.select_boxes([s.strip() for s in boxes.split(",") if s.strip()])
        t = Timeouts(connect=inv.lab.connect_timeout, banner=max(inv.lab.connect_timeout, 10),
                     command=inv.lab.command_timeout)
        rows = trust(inv, selected, timeouts=t,
                     host_key_policy="accept-new" if accept_new else None)
        _emit(as_json, [dataclasses.asdict(r) for r in rows],
              [f"{r.box}: {r.outcome}" + (f" ({r.detail})" if r.detail else "") for r in rows])
        return 1 if any(r.outcome == "failed" for r in rows) else 0

    return run_step("registry.trust", body)
