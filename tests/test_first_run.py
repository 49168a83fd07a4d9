"""A first run that talks (issue 24): gunicorn's lines are JSON like the app's, Ctrl-C ends
cleanly, a busy port is named with CDS_PORT, and the Docker health check follows CDS_PORT."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time

import pytest
from served import BIN, ROOT, Gunicorn, free_port

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and signals")


def _env(tmp_path) -> dict[str, str]:
    env = {
        **os.environ,
        "CDS_WORKERS": "2",
        "CDS_AUTH_MODE": "off",
        "CDS_DATA_DIR": str(tmp_path / "data"),
    }
    for name in ("CDS_TODAY", "PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CMD_ARGS"):
        env.pop(name, None)
    return env


def _json_lines(text: str) -> list[dict]:
    """Every line printed, each one JSON object (fails naming the first that is not)."""
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n---\n{text[-3000:]}")
    return lines


def test_ctrl_c_ends_cleanly_and_gunicorn_lines_are_json(tmp_path):
    """Ctrl-C reaches the master and both workers (one process group, as in a terminal):
    exit status 0, no traceback, every line JSON, gunicorn's worker messages kept."""
    with Gunicorn(_env(tmp_path)) as server:
        status = server.stop()
        printed = server.stderr()
    assert status == 0, printed[-3000:]
    assert "Logging error" not in printed and "Traceback" not in printed
    lines = _json_lines(printed)
    messages = [line["msg"] for line in lines if line["logger"] == "gunicorn.error"]
    assert any(m.startswith("Listening at: http://127.0.0.1:") for m in messages)
    assert sum(m.startswith("Booting worker") for m in messages) == 2
    assert sum(m.startswith("Worker exiting") for m in messages) == 2  # not lost any more
    assert lines[-1]["msg"] == "Shutting down: Master"
    assert not [line for line in lines if line["logger"].startswith("alembic")]  # noise
    assert all(line["level"] in ("INFO", "WARNING") for line in lines), printed[-3000:]


def test_ctrl_c_while_the_workers_boot_ends_cleanly_too(tmp_path):
    """Ctrl-C before the workers have loaded the app: still one quit per worker, at once."""
    with Gunicorn(_env(tmp_path), wait=False) as server:
        deadline = time.monotonic() + 60
        while server.stderr().count("Booting worker") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        status = server.stop()
        stopping = time.monotonic() - started
        printed = server.stderr()
    assert status == 0, printed[-3000:]
    assert "Traceback" not in printed and "Logging error" not in printed, printed[-3000:]
    _json_lines(printed)
    # A worker that had not yet installed its handlers once waited for the 30 s graceful
    # timeout and a SIGKILL.
    assert stopping < 20, f"Ctrl-C took {stopping:.1f} s"


def test_a_busy_port_is_one_line_naming_cds_port(tmp_path):
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        env = {**_env(tmp_path), "CDS_PORT": str(port), "CDS_HOST": "127.0.0.1"}
        started = time.monotonic()
        result = subprocess.run(
            [
                str(BIN / "gunicorn"),
                "-c",
                "python:cds_service.web.gunicorn_conf",
                "cds_service.web.app:create_app()",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    errors = [line for line in _json_lines(result.stderr) if line["level"] == "ERROR"]
    assert len(errors) == 1, result.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in errors[0]["msg"]
    assert "CDS_PORT" in errors[0]["msg"]
    assert "Retrying" not in result.stderr and "Connection in use" not in result.stderr
    # gunicorn's own way retries five times a second apart: this stops before booting.
    assert "Booting worker" not in result.stderr
    assert time.monotonic() - started < 60


def _healthcheck_command() -> str:
    dockerfile = (ROOT / "Dockerfile").read_text()
    match = re.search(r'HEALTHCHECK [^\n]*\\\n\s*CMD python -c "([^"]+)"', dockerfile)
    assert match, "no HEALTHCHECK ... CMD python -c in the Dockerfile"
    return match.group(1)


def test_the_docker_healthcheck_follows_cds_port(tmp_path):
    """The image's health check asks the port the service listens on, wherever CDS_PORT
    moves it (it was fixed at 8080)."""
    code = _healthcheck_command()
    assert "8080/healthz" not in code
    with Gunicorn(_env(tmp_path)) as server:
        for port, expected in ((server.port, 0), (free_port(), 1)):
            env = {**os.environ, "CDS_PORT": str(port)}
            result = subprocess.run(
                [str(BIN / "python"), "-c", code], env=env, capture_output=True, timeout=60
            )
            assert result.returncode == expected, result.stderr


def test_the_docker_build_copies_every_directory_the_package_is_built_from():
    """setup.py maps cards/ and fhir_examples/ into the package: the build stage must have
    them, or the wheel build fails (no Docker daemon here to build the image itself)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    setup = (ROOT / "setup.py").read_text()
    for directory in re.findall(r'"cds_service\.bundled_\w+": "(\w+)"', setup):
        assert re.search(rf"^COPY {directory} \./{directory}$", dockerfile, re.M), directory
