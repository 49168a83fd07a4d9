"""gunicorn started as `make run` starts it, on a free loopback port, for tests that speak
to it over HTTP and read what it prints (tests/test_first_run.py, test_readme_commands.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
START_LIMIT = 90  # seconds: a loaded two-core machine can take long to boot two workers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Gunicorn:
    """``with Gunicorn(env) as server:`` ... ``server.stop()`` sends SIGINT to the whole
    process group, as Ctrl-C in a terminal does, and returns what it printed on stderr."""

    def __init__(self, env: dict[str, str], port: int | None = None, wait: bool = True) -> None:
        self.wait = wait  # until it answers /healthz
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "CDS_PORT": str(self.port), "CDS_HOST": "127.0.0.1"}
        self._stderr = tempfile.TemporaryFile()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Gunicorn:
        self.process = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "-c",
                "python:cds_service.web.gunicorn_conf",
                "cds_service.web.app:create_app()",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_LIMIT
        while self.wait and not answers(self.base + "/healthz"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("gunicorn did not start:\n" + self.stderr()[-3000:])
            time.sleep(0.2)
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self._stderr.close()

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Ctrl-C (SIGINT to the process group); the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")
