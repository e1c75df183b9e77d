"""`warpforge-launch serve`: its options and the checks made before anything listens.

Safe by default: the default bind is 127.0.0.1 (or ::1, localhost) and needs no token; any
other address, other loopback addresses included, needs --token or --token-file, and
every request must then carry the token. The rule is about the default, not about
reachability: whoever binds elsewhere (another loopback alias behind a forwarder, a
container port, a LAN address) is opening the page to someone, so it asks for the token.
"""

from __future__ import annotations

import argparse
import os
import sys

from warpforge_launch.errors import UsageError

DEFAULT_HOSTS = ("127.0.0.1", "::1", "localhost")
_TOKEN = r"[A-Za-z0-9._~+/=-]{16,512}"  # checked only when serving: re stays off --help


def add_parser(sub, parents) -> None:
    p = sub.add_parser("serve", parents=parents, help="the web dashboard of the lab and its jobs")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs a token)")
    p.add_argument("--port", type=int, default=8700, help="port (default 8700; 0: any free)")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--token", help="require this token on every request (>= 16 characters)")
    tok.add_argument("--token-file", metavar="FILE",
                     help="read the token from FILE (mode 0600; keeps it out of `ps`)")
    p.add_argument("--allow-cancel", action="store_true",
                   help="allow cancelling jobs from the page (default: read-only)")
    p.add_argument("--refresh", type=float, default=2.0, metavar="SECONDS",
                   help="seconds between refresh cycles of active jobs (default 2)")
    p.add_argument("--smoke-junit", default="reports/smoke-junit.xml", metavar="PATH",
                   help="the smoke task's JUnit report (default: its default, "
                        "reports/smoke-junit.xml)")
    p.set_defaults(run=main)


def read_token(args) -> str | None:
    import re
    import stat

    token = args.token
    if args.token_file:
        try:
            st = os.stat(args.token_file)
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise UsageError(f"--token-file {args.token_file} is readable by others",
                                 hint=f"chmod 600 {args.token_file}")
            with open(args.token_file) as f:
                token = f.read().strip()
        except OSError as e:
            raise UsageError(f"--token-file {args.token_file}: {e.strerror}") from None
    if token is not None and not re.fullmatch(_TOKEN, token):
        raise UsageError("the token must be 16-512 characters of A-Z a-z 0-9 . _ ~ + / = -",
                         hint="e.g. python3 -c 'import secrets; print(secrets.token_urlsafe())'")
    return token


def check_host(host: str, token: str | None) -> None:
    import ipaddress

    if host not in DEFAULT_HOSTS:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise UsageError(f"--host {host!r} is not an IP address",
                             hint="give the address to listen on, e.g. 127.0.0.1") from None
        if token is None:
            raise UsageError(f"--host {host} is not the default 127.0.0.1: give --token or "
                             "--token-file (every request must then carry it)")


def settings_from(args):
    from pathlib import Path

    from warpforge_launch.web.app import Settings

    token = read_token(args)
    check_host(args.host, token)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be within 0-65535, not {args.port}")
    if not 0.2 <= args.refresh <= 3600:
        raise UsageError(f"--refresh must be within 0.2-3600 seconds, not {args.refresh:g}")
    return Settings(host=args.host, port=args.port, token=token,
                    allow_cancel=args.allow_cancel, inventory=args.inventory,
                    refresh_interval=args.refresh,
                    smoke_junit=Path(args.smoke_junit) if args.smoke_junit else None)


def bind(host: str, port: int):
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}",
                         hint="choose another --port (0 picks a free one)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def main(args: argparse.Namespace) -> int:
    import signal

    settings = settings_from(args)
    import uvicorn

    from warpforge_launch.web.app import create_app

    app = create_app(settings)  # a bad inventory is refused before anything listens
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    where = f"[{host}]" if ":" in host else host
    access = "cancel allowed" if settings.allow_cancel else "read-only"
    url = f"http://{where}:{port}/"
    if settings.token is not None:
        # the token itself is never printed: a service manager may keep stdout in a log
        print(f"serving {url}?token=<the token> ({access}, token required; Ctrl-C stops)",
              flush=True)
    else:
        print(f"serving {url} ({access}; Ctrl-C stops)", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            server_header=False)
    # uvicorn shuts down cleanly on SIGINT/SIGTERM, then re-raises the signal: a stop asked
    # for is a normal end here, exit 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    print("stopped", flush=True)
    return 0
