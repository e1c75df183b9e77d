"""The one SSH connector: who to reach and how OpenSSH is told, for every remote thing.

Lab boxes (Fabric control connection, OpenSSH bulk stream), the Slurm login node and the
ssh_config testinfra reads all describe a connection as an `Endpoint` and get their OpenSSH
options from `options()`, rendered either as `-o` arguments or as an ssh_config block. Every
value is validated or quoted here, once: no inventory value can end an option early, add a
second one (a ProxyCommand), or be read as a `%` token. The host-key policy and the
ControlPath scheme live here too, so two connections that differ in user, host, port,
identity or known_hosts never share a master socket.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from warpforge_launch.errors import UsageError

POLICIES = ("strict", "accept-new")
# a host name, an IPv4 address or a bracket-free IPv6 address; nothing a shell or ssh parses
_HOST = re.compile(r"[A-Za-z0-9_.:-]+")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*")
# GCM first: on loopback and gigabit links it moves more bytes per CPU second than ctr+hmac
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
           "aes128-ctr", "aes256-ctr")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Everything that makes one SSH connection different from another."""

    host: str
    port: int = 22
    user: str | None = None
    identity_file: str | None = None
    known_hosts_file: str | None = None  # None: ~/.ssh/known_hosts
    host_key_policy: str = "strict"

    def __post_init__(self) -> None:
        if not _HOST.fullmatch(self.host or "") or self.host.startswith("-"):
            raise UsageError(f"{self.host!r} is not a host name or address")
        if isinstance(self.port, bool) or not isinstance(self.port, int) \
                or not 1 <= self.port <= 65535:
            raise UsageError(f"SSH port {self.port!r} is not a port number (1-65535)")
        if self.user is not None and not _USER.fullmatch(self.user):
            raise UsageError(f"{self.user!r} is not a user name")
        if self.host_key_policy not in POLICIES:
            raise UsageError(f"unknown host_key_policy {self.host_key_policy!r}",
                             hint="use 'strict' or 'accept-new'")
        for what in ("identity_file", "known_hosts_file"):
            value = getattr(self, what)
            if value is not None:
                _check_path(what, value)

    @classmethod
    def of(cls, box: Any, host_key_policy: str | None = None) -> Endpoint:
        """The endpoint of an inventory box (anything with host, port, user, ...)."""
        return cls(host=box.host, port=int(box.port), user=box.user or None,
                   identity_file=_expand(box.identity_file),
                   known_hosts_file=_expand(box.known_hosts_file),
                   host_key_policy=host_key_policy or box.host_key_policy or "strict")

    @property
    def known_hosts(self) -> Path:
        return Path(self.known_hosts_file or os.path.expanduser("~/.ssh/known_hosts"))

    @property
    def key_name(self) -> str:
        """The name OpenSSH and paramiko file this host's key under."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def control_key(self) -> str:
        """Short, stable key over every field: one ControlMaster per distinct connection."""
        text = "\0".join(str(v) for v in dataclasses.astuple(self))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _expand(path: Any) -> str | None:
    return os.path.expanduser(str(path)) if path else None


def _check_path(what: str, value: str) -> None:
    if not value or any(ord(c) < 32 or c in '"\x7f' for c in value):
        raise UsageError(f"{what} {value!r} holds a quote or a control character")


def control_path(directory: Path, ep: Endpoint) -> Path:
    """Where the master socket for ep lives (short: unix socket paths stop at ~108 bytes)."""
    return Path(directory) / f"cm-{ep.control_key()}"


def options(ep: Endpoint, *, connect_timeout: float = 10, alive: tuple[int, int] = (15, 4),
            control: Path | None = None, persist: int | None = None,
            ciphers: Sequence[str] | None = None,
            kex_first: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The OpenSSH options for ep, in order; `control` None means no connection sharing.
    `kex_first`: key exchanges tried before the client's defaults (which stay allowed)."""
    policy = "yes" if ep.host_key_policy == "strict" else "accept-new"
    opts = [("HostName", ep.host), ("Port", str(ep.port)), ("BatchMode", "yes"),
            ("ConnectTimeout", str(max(1, round(connect_timeout)))),
            ("StrictHostKeyChecking", policy),
            ("UserKnownHostsFile", str(ep.known_hosts)),
            ("GlobalKnownHostsFile", "/dev/null"),
            ("ServerAliveInterval", str(alive[0])), ("ServerAliveCountMax", str(alive[1])),
            ("LogLevel", "ERROR")]
    if ep.user:
        opts.append(("User", ep.user))
    if ep.identity_file:
        opts += [("IdentityFile", ep.identity_file), ("IdentitiesOnly", "yes")]
    if ciphers:
        opts.append(("Ciphers", ",".join(ciphers)))
    if kex_first:
        opts.append(("KexAlgorithms", "^" + ",".join(kex_first)))
    if control is None:
        opts += [("ControlMaster", "no"), ("ControlPath", "none")]
    else:
        opts += [("ControlMaster", "auto"), ("ControlPath", str(control))]
        if persist is not None:
            opts.append(("ControlPersist", str(int(persist))))
    return opts


# options whose values OpenSSH expands (% tokens): a literal % must be doubled
_EXPANDED = {"IdentityFile", "UserKnownHostsFile", "ControlPath", "GlobalKnownHostsFile"}


def render_value(key: str, value: str) -> str:
    """One option value as OpenSSH's config tokenizer reads it back unchanged."""
    if any(ord(c) < 32 or c in '"\x7f' for c in value):
        raise UsageError(f"SSH option {key}: value {value!r} holds a quote or a control "
                         "character")
    if key in _EXPANDED:
        value = value.replace("%", "%%")
    return f'"{value}"' if any(c.isspace() for c in value) or not value else value


def client_options(ep: Endpoint, *, ssh: str = "ssh", read_config: bool = False,
                   **kw) -> list[str]:
    """The OpenSSH client and its options for ep, without the destination. With
    read_config False no ssh_config file is read: the inventory is the whole truth."""
    line = [ssh, *([] if read_config else ["-F", "none"]), "-T", "-e", "none"]
    for key, value in options(ep, **kw):
        line += ["-o", f"{key}={render_value(key, value)}"]
    return line


def argv(ep: Endpoint, command: str | None = None, **kw) -> list[str]:
    """The OpenSSH client line reaching ep, then `command` (one string for the remote
    shell: build it with shlex.join) if given."""
    line = [*client_options(ep, **kw), "--", ep.host]
    return line + ([command] if command is not None else [])


def config_block(alias: str, ep: Endpoint, **kw) -> str:
    """An ssh_config `Host` block for ep (what testinfra's ssh:// backend reads)."""
    if not _HOST.fullmatch(alias):
        raise UsageError(f"{alias!r} cannot name an ssh_config host")
    lines = [f"Host {alias}"]
    lines += [f"  {key} {render_value(key, value)}" for key, value in options(ep, **kw)]
    return "\n".join(lines) + "\n"


# ---- host keys (paramiko policies; paramiko is imported by the caller) ------------------------
def fingerprint(key) -> str:
    """OpenSSH's `SHA256:...` fingerprint of a paramiko key."""
    import base64

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class HostKeyError(UsageError):
    """The host key is unknown (strict mode) or differs from the recorded one."""


class RejectUnknown:
    """paramiko policy for strict mode: an unknown key is refused, with how to trust it."""

    def __init__(self, ep: Endpoint, who: str):
        self.ep, self.who = ep, who

    def missing_host_key(self, client, hostname, key):
        import shlex

        ep = self.ep
        raise HostKeyError(
            f"{self.who}: host key for {hostname} ({key.get_name()} {fingerprint(key)}) is "
            f"not in {ep.known_hosts}: refusing to connect",
            hint=f"verify that fingerprint on the box (ssh-keygen -lf on its host key), then "
                 f"trust it: {shlex.join(['ssh-keyscan', '-p', str(ep.port), ep.host])}"
                 f" >> {shlex.quote(str(ep.known_hosts))}, or run once with host key policy "
                 f"accept-new (--accept-new) to record it")


class AcceptNew:
    """paramiko policy for accept-new: record a never-seen key; a changed one still fails."""

    def __init__(self, ep: Endpoint, who: str):
        self.ep, self.who = ep, who

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        record_host_key(self.ep.known_hosts, hostname, key)


def host_key_policy(ep: Endpoint, who: str):
    return (RejectUnknown if ep.host_key_policy == "strict" else AcceptNew)(ep, who)


def changed_key_error(ep: Endpoint, who: str, key) -> HostKeyError:
    import shlex

    name = ep.key_name
    return HostKeyError(
        f"{who}: host key for {name} does not match {ep.known_hosts} (got {fingerprint(key)}):"
        " refusing to connect, the box may be an impostor",
        hint=f"if the box was reinstalled, verify its new key, then remove the old one: "
             f"{shlex.join(['ssh-keygen', '-R', name, '-f', str(ep.known_hosts)])}"
             " and trust the new one")


def record_host_key(path: Path, hostname: str, key) -> None:
    """Append one known_hosts line, serialised with other writers by an fcntl lock."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(line)


# ---- fan-out --------------------------------------------------------------------------------
T = TypeVar("T")
R = TypeVar("R")


def fan_out(items: Sequence[T], work: Callable[[T], R], parallel: int,
            name: str = "box") -> list[R]:
    """work(item) for every item, at most `parallel` at once; results in input order.
    `work` reports its own failures as results: one item's trouble never stops the rest."""
    import concurrent.futures

    if not items:
        return []
    workers = max(1, min(int(parallel), len(items)))
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix=name) as ex:
        return list(ex.map(work, items))
