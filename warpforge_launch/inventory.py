"""The inventory: one source of truth for schedulers, boxes, the build and the lab.

Found as --inventory > $WARPFORGE_INVENTORY > ./inventory.yaml >
~/.config/warpforge/inventory.yaml > the built-in default (a local scheduler and a local
box). It is validated whole and every error is reported with its field path; nothing falls
back silently. The seed's *_OVERRIDE, WAKE_BOXES and SKIP_IF_UNREACHABLE variables override
it. Config classes are plain dataclasses (pydantic validates them here, only when an
inventory is loaded) so commands that only read the job store start fast.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from warpforge_launch.errors import NotFoundError, UsageError
from warpforge_launch.jobs import GpuType

_INSTANCE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_STRICT = {"extra": "forbid"}  # pydantic config for every section: typos are errors


def _state_path(name: str) -> str:
    """A path under the one state directory ($WARPFORGE_HOME), as the job store uses."""
    from warpforge_launch.storefile import home

    return str(home() / name)


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"))


@dataclass(frozen=True)
class Box:
    """A machine the lab drives: the NUC, a GPU box, or this machine (transport local)."""

    __pydantic_config__ = _STRICT
    name: str = ""  # filled from the mapping key
    transport: Literal["ssh", "local"] = "ssh"
    address: str | None = None  # host name or address; default: the box name
    port: int = 22
    user: str | None = None
    identity_file: str | None = None
    known_hosts_file: str | None = None  # default: ~/.ssh/known_hosts
    host_key_policy: Literal["strict", "accept-new"] = "strict"
    aliases: tuple[str, ...] = ()
    mac: str | None = None
    wol_host: str | None = None  # where magic packets go (the LAN broadcast address)
    wol_port: int = 9
    gpu_type: GpuType = GpuType.NONE
    gpu_count: int = 0
    install_dir: str = "/opt/warpforge"
    groups: tuple[str, ...] = ()

    @property
    def host(self) -> str:
        return self.address or self.name

    def matches(self, selector: str) -> bool:
        return selector == self.name or selector in self.aliases or selector in self.groups


@dataclass(frozen=True)
class LabSettings:
    """How lab tasks behave; WAKE_BOXES and SKIP_IF_UNREACHABLE override the first two."""

    __pydantic_config__ = _STRICT
    wake_boxes: bool = True
    skip_if_unreachable: bool = True
    wake_timeout: float = 60.0
    wake_interval: float = 10.0
    keep_releases: int = 3
    connect_timeout: float = 5.0
    log_root: str = field(default_factory=lambda: _state_path("logs"))
    parallel: int = 4  # boxes worked on at once by wake/distribute/smoke
    lock_wait: float = 120.0  # how long distribute/rollback wait for a box's lock
    command_timeout: float = 600.0  # one remote command (a push has this plus 5 MB/s)
    # smoke checks, in order; `version` is off because the real snakegrinder has no --version
    smoke_checks: tuple[str, ...] = ("exists", "help", "trace-example", "checksums")
    # where gpu-info also looks for nvidia-smi / rocm-smi / amd-smi on a box (ROCm's default)
    gpu_tool_path: tuple[str, ...] = ("/opt/rocm/bin",)


@dataclass(frozen=True)
class BuildStep:
    __pydantic_config__ = _STRICT
    name: str
    run: tuple[str, ...]  # argv, never a shell string
    timeout: float = 3600.0


@dataclass(frozen=True)
class BuildConfig:
    """The NUC build: where the WarpForge source lives and how the dist is made."""

    __pydantic_config__ = _STRICT
    profile: Literal["gradle", "standin"] = "gradle"
    source: str = "~/warpforge"  # the checkout on the build box
    repository: str | None = None  # origin URL; clone when the checkout is missing
    branch: str = "main"
    cache_paths: tuple[str, ...] = (".gradle", "build-cache")
    steps: tuple[BuildStep, ...] | None = None  # None: the profile's defaults
    test_floors: Mapping[str, int] | None = field(default=None)  # None: profile floors; {}: none
    dist_dir: str = "snakegrinder-dist/build/dist"  # relative to source, or absolute


@dataclass(frozen=True)
class CiBox:
    """One GPU box of the CI run; it runs only if every box it depends on PASSED."""

    __pydantic_config__ = _STRICT
    box: str
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class CiTimeouts:
    """Deadlines (seconds) of each box-build step."""

    __pydantic_config__ = _STRICT
    sync: float = 600.0
    build: float = 3600.0
    test: float = 3600.0
    gpu_tests: float = 3600.0
    power_off: float = 60.0


@dataclass(frozen=True)
class CiConfig:
    """`invoke ci`: the box builds after the NUC build, distribute and smoke stages."""

    __pydantic_config__ = _STRICT
    boxes: tuple[CiBox, ...] = ()  # in run order
    repository: str | None = None  # origin URL as the boxes reach it
    branch: str = "main"
    remote_dir: str = "warpforge"  # the checkout on a box, relative to the login's home
    cache_paths: tuple[str, ...] = (".gradle", "build-cache")
    build: tuple[str, ...] = ("./gradlew", "clean", "assemble")
    test: tuple[str, ...] = ("./gradlew", "test")
    test_floors: Mapping[str, int] = field(default_factory=dict)  # module -> executed tests
    gpu_tests: Mapping[GpuType, tuple[str, ...]] = field(default_factory=dict)
    power_off: tuple[str, ...] = ("sudo", "systemctl", "poweroff")
    log_root: str | None = None  # default: lab.log_root
    timeouts: CiTimeouts = CiTimeouts()


@dataclass(frozen=True)
class RegistryConfig:
    """The lab's own image registry (registry v2 in a container on the box that runs it)."""

    __pydantic_config__ = _STRICT
    host: str = "nuc.local"  # how Docker clients and the boxes name it
    port: int = 5000
    bind: str = "0.0.0.0"  # the address it listens on (host networking)
    data_dir: str = "/srv/warpforge/registry"  # on the box that runs it; survives restarts
    box: str | None = None  # the box whose Docker engine runs it; None: this machine
    docker_host: str | None = None  # Docker engine URL; default: DOCKER_HOST or the box
    image: str = "registry:2"
    container: str = "warpforge-registry"
    daemon_json: str = "/etc/docker/daemon.json"  # what `registry.trust` edits on the boxes
    docker_restart: tuple[str, ...] = ("systemctl", "restart", "docker")  # argv, after a change

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ImagesConfig:
    """The Docker images and SIF files `invoke images` and `invoke sif` make."""

    __pydantic_config__ = _STRICT
    name: str = "warpforge"  # repository in the registry: <registry>/<name>:<vendor>-<version>
    version: str | None = None  # default: the dist's BUILD-INFO version, else its content hash
    vendors: tuple[Literal["nvidia", "amd"], ...] = ("nvidia", "amd")
    base_images: Mapping[Literal["nvidia", "amd"], str] = field(default_factory=dict)
    containers_dir: str | None = None  # the Dockerfiles; default: the package's containers/
    sif_dir: str = "/shared/containers"  # where SIFs go when no Slurm scheduler names them


@dataclass(frozen=True)
class SchedulerEntry:
    name: str
    type: str
    config: Any  # the scheduler type's Config dataclass


@dataclass(frozen=True)
class Inventory:
    path: Path | None  # None: the built-in default
    default_scheduler: str
    schedulers: Mapping[str, SchedulerEntry]
    boxes: Mapping[str, Box]
    build: BuildConfig
    lab: LabSettings
    ci: CiConfig = CiConfig()
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    sections: frozenset[str] = frozenset()  # the top-level keys the file itself has

    @property
    def registry_configured(self) -> bool:
        """A registry section was written (the defaults name a host that may not exist)."""
        return "registry" in self.sections

    def scheduler(self, name: str | None = None) -> SchedulerEntry:
        name = name or self.default_scheduler
        try:
            return self.schedulers[name]
        except KeyError:
            raise NotFoundError(f"no scheduler {name!r} in the inventory ({self.describe()})",
                                hint=f"configured: {', '.join(sorted(self.schedulers))}") from None

    def describe(self) -> str:
        return str(self.path) if self.path else "built-in default"

    def select_boxes(self, selectors: Iterable[str] = ()) -> list[Box]:
        """Boxes by name, alias or group, in inventory order; no selector: every box."""
        selectors = [s for s in selectors if s]
        if not selectors:
            return list(self.boxes.values())
        unknown = [s for s in selectors if not any(b.matches(s) for b in self.boxes.values())]
        if unknown:
            raise NotFoundError(f"no box, alias or group named {', '.join(map(repr, unknown))}",
                                hint=f"boxes: {', '.join(self.boxes)}")
        return [b for b in self.boxes.values() if any(b.matches(s) for s in selectors)]


def default_document() -> dict[str, Any]:
    """The embedded default: run jobs on this machine, distribute to this machine."""
    return {
        "version": 1,
        "default_scheduler": "local",
        "schedulers": {"local": {"type": "local"}},
        "boxes": {"local": {"transport": "local", "groups": ["local"],
                            "install_dir": str(data_home() / "warpforge" / "boxes" / "local")}},
        "build": {"profile": "standin", "source": "."},
    }


def find(path: str | os.PathLike | None = None) -> Path | None:
    if path:
        return Path(path)
    env = os.environ.get("WARPFORGE_INVENTORY")
    if env:
        return Path(env)
    for candidate in (Path("inventory.yaml"),
                      Path(os.path.expanduser("~/.config/warpforge/inventory.yaml"))):
        if candidate.is_file():
            return candidate
    return None


def load(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Inventory:
    found = find(path)
    env = os.environ if env is None else env
    if found is None:
        return parse(default_document(), None, env)
    from warpforge_launch import inventorycache

    parsed = inventorycache.get(found)
    if parsed is None or parsed.path != found:
        parsed = parse(_read_yaml(found), found, {})  # overrides come after the cache
        inventorycache.put(found, parsed)
    return apply_overrides(parsed, env)


def _read_yaml(path: Path) -> Any:
    from warpforge_launch import yamlfile

    try:
        return yamlfile.read(path, "inventory")  # a key given twice is an error too
    except FileNotFoundError:
        raise UsageError(f"inventory {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"inventory {path} cannot be read: {exc.strerror}") from None


def _validate(tp: type, data: Any, where: str, errors: list[str]) -> Any:
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(tp).validate_python(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in (where, *err["loc"]) if p != "")
            errors.append(f"{loc}: {err['msg']}")
        return None


def parse(document: Any, path: Path | None, env: Mapping[str, str]) -> Inventory:
    from warpforge_launch.schedulers.registry import scheduler_class

    where = str(path) if path else "built-in default inventory"
    if not isinstance(document, dict):
        raise UsageError(f"inventory {where} must be a mapping at the top level")
    errors: list[str] = []
    allowed = {"version", "default_scheduler", "schedulers", "boxes", "build", "lab", "registry",
               "images", "ci"}
    for key in sorted(set(document) - allowed):
        errors.append(f"{key}: unknown section (known: {', '.join(sorted(allowed))})")
    if document.get("version", 1) != 1:
        errors.append(f"version: unsupported inventory version {document.get('version')!r} "
                      "(this warpforge-launch reads version 1)")

    schedulers: dict[str, SchedulerEntry] = {}
    raw_scheds = document.get("schedulers") or {}
    if not isinstance(raw_scheds, dict):
        errors.append("schedulers: must be a mapping of instance name -> settings")
        raw_scheds = {}
    for name, raw in raw_scheds.items():
        loc = f"schedulers.{name}"
        if not isinstance(raw, dict) or "type" not in raw:
            errors.append(f"{loc}: needs a mapping with a 'type' (local, ray, slurm, kubernetes)")
            continue
        if not _INSTANCE_NAME.fullmatch(str(name)):
            errors.append(f"{loc}: instance names are letters, digits and '_', starting with a "
                          "letter (the name prefixes job ids: <name>-<native id>)")
        settings = {k: v for k, v in raw.items() if k != "type"}
        try:
            cls = scheduler_class(str(raw["type"]))
        except UsageError as exc:
            errors.append(f"{loc}.type: {exc}")
            continue
        config = _validate(cls.Config, settings, loc, errors)
        if config is not None:
            schedulers[str(name)] = SchedulerEntry(str(name), str(raw["type"]), config)

    default = document.get("default_scheduler") or ("local" if "local" in raw_scheds else None)
    if default is None and raw_scheds:
        default = next(iter(raw_scheds))
    if default is not None and default not in raw_scheds:
        errors.append(f"default_scheduler: {default!r} is not among the schedulers "
                      f"({', '.join(map(str, raw_scheds)) or 'none'})")

    boxes: dict[str, Box] = {}
    raw_boxes = document.get("boxes") or {}
    if not isinstance(raw_boxes, dict):
        errors.append("boxes: must be a mapping of box name -> settings")
        raw_boxes = {}
    for name, raw in raw_boxes.items():
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            errors.append(f"boxes.{name}: must be a mapping")
            continue
        box = _validate(Box, {**raw, "name": str(name)}, f"boxes.{name}", errors)
        if box is not None:
            boxes[str(name)] = box
    _check_box_names(boxes, errors)

    schedulers = _resolve_login_boxes(schedulers, boxes, errors)
    _check_local_work_dirs(schedulers, errors)
    build = _validate(BuildConfig, document.get("build") or {}, "build", errors)
    lab = _validate(LabSettings, document.get("lab") or {}, "lab", errors)
    ci = _validate(CiConfig, document.get("ci") or {}, "ci", errors)
    if ci is not None:
        _check_ci(ci, boxes, errors)
    registry = _validate(RegistryConfig, document.get("registry") or {}, "registry", errors)
    images = _validate(ImagesConfig, document.get("images") or {}, "images", errors)
    if registry is not None and registry.box is not None and not any(
            registry.box == b.name or registry.box in b.aliases for b in boxes.values()):
        errors.append(f"registry.box: no box {registry.box!r} in boxes")
    if registry is not None and not 0 < registry.port < 65536:
        errors.append(f"registry.port: {registry.port} is not a TCP port (1-65535)")
    _check_ranges(boxes, lab, errors)
    if errors:
        raise UsageError(f"inventory {where} is invalid ({len(errors)} error"
                         f"{'s' if len(errors) > 1 else ''}): " + "; ".join(errors))
    inv = Inventory(path, default or "local", schedulers, boxes, build, lab, ci, registry,
                    images, frozenset(document))
    return apply_overrides(inv, env)


def _check_ci(ci: CiConfig, boxes: Mapping[str, Box], errors: list[str]) -> None:
    """Box order and dependencies: known boxes, each once, depending only on earlier ones."""
    seen: list[str] = []
    for i, entry in enumerate(ci.boxes):
        loc = f"ci.boxes.{i}"
        if entry.box not in boxes:
            errors.append(f"{loc}.box: no box {entry.box!r} in boxes "
                          f"({', '.join(boxes) or 'none'})")
        if entry.box in seen:
            errors.append(f"{loc}.box: {entry.box!r} is listed twice")
        for dep in entry.depends_on:
            if dep not in seen:
                errors.append(f"{loc}.depends_on: {dep!r} must be a box listed before "
                              f"{entry.box!r} in ci.boxes")
        seen.append(entry.box)
    if ci.boxes and not ci.repository:
        errors.append("ci.repository: required when ci.boxes is set (the origin the boxes "
                      "fetch from)")
    for name in ("build", "test", "power_off"):
        if not getattr(ci, name) or not all(getattr(ci, name)):
            errors.append(f"ci.{name}: must be a non-empty argv list")
    for vendor, argv in ci.gpu_tests.items():
        if vendor in (GpuType.NONE, GpuType.ANY):
            errors.append(f"ci.gpu_tests.{vendor.value}: only NVIDIA and AMD have GPU tests")
        if not argv or not all(argv):
            errors.append(f"ci.gpu_tests.{vendor.value}: must be a non-empty argv list")
    for module, floor in ci.test_floors.items():
        if floor < 0:
            errors.append(f"ci.test_floors.{module}: must be >= 0")
    for name in ("sync", "build", "test", "gpu_tests", "power_off"):
        if getattr(ci.timeouts, name) <= 0:
            errors.append(f"ci.timeouts.{name}: must be positive")


_LOGIN_FIELDS = {"login_host": "host", "login_port": "port", "login_user": "user",
                 "identity_file": "identity_file", "known_hosts_file": "known_hosts_file"}


def _resolve_login_boxes(schedulers: dict[str, SchedulerEntry], boxes: Mapping[str, Box],
                         errors: list[str]) -> dict[str, SchedulerEntry]:
    """A scheduler's ``login: <box>`` takes that box's SSH settings (one source of truth);
    fields set explicitly in the scheduler's own section win."""
    resolved = {}
    for name, entry in schedulers.items():
        ref = getattr(entry.config, "login", None)
        if ref:
            box = next((b for b in boxes.values() if ref == b.name or ref in b.aliases), None)
            if box is None:
                errors.append(f"schedulers.{name}.login: no box {ref!r} in boxes")
            elif box.transport == "ssh":
                defaults = {f.name: f.default for f in dataclasses.fields(entry.config)}
                updates = {field_name: getattr(box, attr)
                           for field_name, attr in _LOGIN_FIELDS.items()
                           if field_name in defaults
                           and getattr(entry.config, field_name) == defaults[field_name]}
                entry = dataclasses.replace(entry, config=dataclasses.replace(entry.config,
                                                                              **updates))
        resolved[name] = entry
    return resolved


def _check_local_work_dirs(schedulers: Mapping[str, SchedulerEntry], errors: list[str]) -> None:
    """Two Local instances in one work dir would share job directories and slots (each
    would list, and count against its limit, the other's jobs): refused."""
    local = [e for e in schedulers.values() if e.type == "local"]
    if len(local) < 2:
        return
    from warpforge_launch.schedulers.local import work_dir_of
    from warpforge_launch.storefile import home

    seen: dict[str, str] = {}
    for entry in local:
        path = os.path.abspath(work_dir_of(entry.name, entry.config, home()))
        if path in seen:
            errors.append(f"schedulers.{entry.name}.work_dir: {path} is also the work dir of "
                          f"scheduler {seen[path]!r} (each Local instance needs its own)")
        seen.setdefault(path, entry.name)


def _check_box_names(boxes: Mapping[str, Box], errors: list[str]) -> None:
    seen: dict[str, str] = {}
    for box in boxes.values():
        for label in (box.name, *box.aliases):
            if label in seen and seen[label] != box.name:
                errors.append(f"boxes.{box.name}: name or alias {label!r} is also used by "
                              f"box {seen[label]!r}")
            seen[label] = box.name
        if box.mac is not None and not _is_mac(box.mac):
            errors.append(f"boxes.{box.name}.mac: {box.mac!r} is not a MAC address "
                          "(aa:bb:cc:dd:ee:ff)")
        macs = [b for b in boxes.values() if b.mac and box.mac and b.mac.lower() == box.mac.lower()]
        if len(macs) > 1 and macs[0] is box:
            errors.append(f"boxes: MAC {box.mac} is given to several boxes "
                          f"({', '.join(b.name for b in macs)})")


def _check_ranges(boxes: Mapping[str, Box], lab: LabSettings | None, errors: list[str]) -> None:
    """What the types alone allow but no run can use: ports outside 1-65535 (70000 would
    wrap), endless or negative waits."""
    import math

    for box in boxes.values():
        for name in ("port", "wol_port"):
            value = getattr(box, name)
            if not 1 <= value <= 65535:
                errors.append(f"boxes.{box.name}.{name}: {value} is not a port number "
                              "(1-65535)")
    if lab is None:
        return
    for f in dataclasses.fields(lab):
        value = getattr(lab, f.name)
        if isinstance(value, float) and (not math.isfinite(value) or value <= 0):
            errors.append(f"lab.{f.name}: must be a positive number of seconds, not {value}")
    if lab.parallel < 1:
        errors.append(f"lab.parallel: must be at least 1, not {lab.parallel}")
    if lab.keep_releases < 2:
        errors.append(f"lab.keep_releases: must be at least 2 (current and previous), not "
                      f"{lab.keep_releases}")


def _is_mac(text: str) -> bool:
    parts = text.replace("-", ":").split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p)
                                   for p in parts)


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    if value not in ("0", "1"):
        raise UsageError(f"{name} must be 0 or 1, got {value!r}")
    return value == "1"


def apply_overrides(inv: Inventory, env: Mapping[str, str]) -> Inventory:
    """The seed's environment variables win over the file, as the original scripts did."""
    boxes = dict(inv.boxes)
    for var, label in (("NVIDIA_HOST_OVERRIDE", "nvidia"), ("AMD_HOST_OVERRIDE", "amd")):
        host = env.get(var)
        if host:
            targets = [b for b in boxes.values() if b.name == label or label in b.aliases]
            if not targets:
                raise UsageError(f"{var} is set but the inventory has no box called {label!r}")
            for b in targets:
                boxes[b.name] = dataclasses.replace(b, address=host)
    install_dir = env.get("INSTALL_DIR_OVERRIDE")
    if install_dir:
        boxes = {n: dataclasses.replace(b, install_dir=install_dir) for n, b in boxes.items()}
    build = inv.build
    if env.get("DIST_DIR_OVERRIDE"):
        build = dataclasses.replace(build, dist_dir=env["DIST_DIR_OVERRIDE"])
    lab = inv.lab
    wake, skip = _flag(env, "WAKE_BOXES"), _flag(env, "SKIP_IF_UNREACHABLE")
    if wake is not None:
        lab = dataclasses.replace(lab, wake_boxes=wake)
    if skip is not None:
        lab = dataclasses.replace(lab, skip_if_unreachable=skip)
    return dataclasses.replace(inv, boxes=boxes, build=build, lab=lab)
