"""``ivclms serve`` as a child process for tests that need real sockets (gunicorn, third-party
clients): an ephemeral port, its own environment, ready when a probe answers (polled with a deadline)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.auth import TEST_SECRET


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """The server with ``IVCLMS_*`` taken only from ``settings`` (auth by the test secret, data under
    ``tmp``); ``ready(port)`` is the probe, polled until it is true or ``startup_s`` has passed."""

    def __init__(
        self, tmp: Path, settings: dict[str, str], ready: Callable[[int], bool], startup_s: float = 120
    ) -> None:
        self.port = free_port()
        self.log = tmp / "server.log"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("IVCLMS_")},
            "IVCLMS_AUTH_JWT_SECRET": TEST_SECRET,
            "IVCLMS_DATA_DIR": str(tmp / "data"),
            "IVCLMS_HTTP_PORT": str(self.port),
            "IVCLMS_HTTP_WORKERS": "1",
            **settings,
        }
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from service.cli import main; main()", "serve"],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + startup_s
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if ready(self.port):
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"ivclms serve not ready in {startup_s} s"
            time.sleep(0.2)

    def stop(self) -> str:
        """SIGTERM, wait, and the server's log."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self._out.close()
        return self.log.read_text(encoding="utf-8", errors="replace")
