"""Starting our own programs as real processes on free loopback ports, and waiting for them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .controlplane import free_port, terminate


class ServerProcess:
    """A `python -m chatterbox_predictor ...` subprocess; its output goes to a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        argv = [sys.executable, "-m", "chatterbox_predictor", "--http_port", str(self.port),
                "--enable_grpc", "false", *args]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, path: str, timeout: float = 600) -> httpx.Response:
        """Polls `path` until it answers 200; fails with the server's log if the process dies first.
        Ten minutes: a load and warm-up take about 30 s alone, but several times that on these two
        cores while another heavy process runs (300 s ran out once, the server still warming up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                resp = httpx.get(self.url + path, timeout=5)
                if resp.status_code == 200:
                    return resp
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.url}{path} not ready after {timeout} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        terminate(self.proc)
