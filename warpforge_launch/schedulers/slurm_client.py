"""Running Slurm's client programs for one scheduler instance, from its config alone.

Shared by the scheduler (slurm.py) and the `status` path that answers without the job model
(quickstatus.py): both reach the cluster through the same transport, with the same
SLURM_CONF, deadline and failure wording. ``config`` is the instance's settings with
attribute access: a SlurmConfig, or a namespace made from the config a job was stored with.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from warpforge_launch.errors import InfrastructureError
from warpforge_launch.schedulers import slurm_parse as sp
from warpforge_launch.schedulers.slurm_transport import (
    Completed,
    LocalTransport,
    SshTransport,
    Transport,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: `status` goes without importing typing
    from typing import Any

NATIVE_ID = re.compile(r"^\d+(?:_\d+)?$")  # a job, or an array task <job>_<task>
_UNREACHABLE = ("unable to contact slurm controller", "socket timed out",
                "connection refused", "zero bytes were transmitted", "communication connection",
                "slurm_persist_conn_open", "unable to establish")


def transport_for(config: Any, home: str | os.PathLike) -> Transport:
    """The login node over SSH when ``login_host`` is set, else the clients here."""
    if config.login_host:
        return SshTransport(
            config.login_host, port=config.login_port, user=config.login_user,
            identity_file=config.identity_file, known_hosts_file=config.known_hosts_file,
            control_dir=os.path.join(home, "ssh"), control_persist=config.control_persist_seconds,
            connect_timeout=min(10.0, config.command_timeout))
    return LocalTransport()


def client_argv(config: Any, argv: Sequence[str]) -> list[str]:
    return ["env", f"SLURM_CONF={config.slurm_conf}", *argv] \
        if config.slurm_conf else list(argv)


def check_local_conf(config: Any, transport: Transport) -> None:
    """A SLURM_CONF naming no file makes every client retry for 60 s: say so at once."""
    if not isinstance(transport, LocalTransport):
        return
    conf = config.slurm_conf or transport.env.get("SLURM_CONF") or os.environ.get("SLURM_CONF")
    if conf and not os.path.isfile(conf):
        raise InfrastructureError(
            f"Slurm client configuration: SLURM_CONF={conf} is not a file on "
            f"{transport.where}", hint="fix slurm_conf in the inventory or SLURM_CONF")


def run(config: Any, transport: Transport, argv: Sequence[str], *, input: str | None = None,
        timeout: float | None = None, program: str | None = None,
        check: bool = True) -> Completed:
    """Run one client; with ``check``, a failure to reach slurmctld or to start at all
    raises (exit 3). Other failures are the caller's to read."""
    check_local_conf(config, transport)
    done = transport.run(client_argv(config, argv), input=input, program=program or argv[0],
                         timeout=timeout or config.command_timeout)
    if done.returncode != 0 and check:
        raise_client_failure(done.stderr, transport.where)
    return done


def raise_client_failure(stderr: str, where: str, note: str = "") -> None:
    """A client that could not reach slurmctld, or could not start at all (slurm.conf,
    munge), is infrastructure (exit 3) with the client's own line; anything else returns."""
    low = stderr.lower()
    if any(s in low for s in _UNREACHABLE):
        raise InfrastructureError(f"Slurm controller unreachable from {where}: "
                                  f"{sp.first_line(stderr)}{note}",
                                  hint="is slurmctld running? `sinfo` should answer")
    line = sp.client_config_error(stderr)
    if line:
        raise InfrastructureError(f"Slurm client configuration failed on {where}: {line}{note}",
                                  hint="check slurm.conf (SLURM_CONF) and that munged runs")


# the settings the watch side reads; a stored config without one takes the full path
_WATCH_KEYS = ("login_host", "login_port", "login_user", "identity_file", "known_hosts_file",
               "control_persist_seconds", "command_timeout", "slurm_conf", "max_poll_interval")


def live_statuses(instance: str, config: dict[str, Any], home: str,
                  natives: list[str]) -> dict[str, dict[str, Any]] | None:
    """JobStatus fields by native id for the jobs Slurm knows: the scheduler's own batched
    refresh (one squeue, one sacct for what left it), without the job model. None when the
    stored config or an id is not what the scheduler would accept."""
    from types import SimpleNamespace

    from warpforge_launch.schedulers.slurm_watch import SlurmWatcher

    if any(k not in config for k in _WATCH_KEYS) or not all(map(NATIVE_ID.match, natives)):
        return None
    cfg = SimpleNamespace(**{k: config[k] for k in _WATCH_KEYS})
    transport = transport_for(cfg, home)
    try:
        watcher = SlurmWatcher(lambda argv, **kw: run(cfg, transport, argv, **kw),
                               os.path.join(home, "slurm", f"{instance}.json"),
                               cfg.max_poll_interval)
        return {n: sp.status_fields(r) for n, r in watcher.records(natives).items()}
    finally:
        transport.close()
