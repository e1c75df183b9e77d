"""A black hole: a loopback listener that accepts TCP connections and never says a word.

What a hung server looks like (no SSH banner, no TLS handshake, no HTTP answer), unlike a
refused port that fails in milliseconds: timeouts are tested against this.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class BlackHole:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port: int = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._swallow, daemon=True).start()

    def _swallow(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:  # closed
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """The port of a black hole, closed (with every connection it holds) on exit."""
    hole = BlackHole()
    try:
        yield hole.port
    finally:
        hole.close()
