"""Every README command that can run offline, run as a new user would, on today's date
(issue 24: "every README command works on a fresh clone on today's date and gives what the
README shows").

The commands are read from the README's ``sh`` blocks, so a command added there is run here
(or must be named in ``NOT_RUN`` with the reason). The curl commands go to gunicorn started
as `make run` starts it, on a free loopback port; ``CDS_TODAY`` is unset everywhere. A
``json`` block right after an ``sh`` block is what its last command answers, trimmed: every
member it shows must be in the answer ("..." stands for what was left out), its dates moved
from the day the examples were written to today, as ``cds-service example`` moves them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from datetime import date, timedelta

import pytest
from served import BIN, ROOT, Gunicorn, answers, free_port

from cds_service import examples

README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
ISO_DAY = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
# What a new user cannot run offline, or what this suite stands for, and why.
NOT_RUN = {
    "make run": "the served gunicorn below is started with the same command line",
    "make test": "this test suite is part of it",
    "docker build": "needs a Docker daemon and the network",
    "docker run": "needs a Docker daemon and an image",
}
TODAY = examples.today_utc()


@dataclass(frozen=True)
class Command:
    line: str  # as in the README, continuation lines joined
    shows: str | None  # the json block that follows, if any

    def __str__(self) -> str:
        return self.line


def readme_commands() -> list[Command]:
    commands: list[Command] = []
    blocks = FENCE.findall(README.read_text(encoding="utf-8"))
    for index, (language, body) in enumerate(blocks):
        if language != "sh":
            continue
        lines = [
            line.split("  #")[0].strip()
            for line in body.replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        lines = [re.sub(r"\s+", " ", line) for line in lines]
        following = blocks[index + 1] if index + 1 < len(blocks) else ("", "")
        shows = following[1] if following[0] == "json" else None
        commands.extend(
            Command(line, shows if i == len(lines) - 1 else None) for i, line in enumerate(lines)
        )
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_the_commands_a_new_user_needs():
    lines = [c.line for c in COMMANDS]
    assert "make run" in lines
    assert any("cds-service example nephrology-ckd-stage-4 | curl" in line for line in lines)
    for command in ("evaluate", "check-rules", "report", "example --list"):
        assert any(f"cds-service {command}" in line for line in lines), command
    for line in lines:  # every command is run below or said why not
        assert runnable(line) or not_run(line), f"README command not covered: {line}"


def not_run(line: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if line.startswith(start)), None)


def runnable(line: str) -> bool:
    words = line.split()
    return words[0] in ("curl", "cds-service", ".venv/bin/cds-service")


def test_make_run_starts_what_the_served_app_starts():
    """The curl commands go to gunicorn started as `make run` starts it."""
    makefile = (ROOT / "Makefile").read_text()
    assert (
        "$(BIN)/gunicorn -c python:cds_service.web.gunicorn_conf "
        "'cds_service.web.app:create_app()'" in makefile
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="module")
def env(workdir) -> dict[str, str]:
    """A new user's environment: today's date, a data directory of its own, the venv's
    commands on PATH (the README says cds-service and .venv/bin/cds-service)."""
    values = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "CDS_DATA_DIR": str(workdir / "data"),
        "CDS_WORKERS": "1",
    }
    for name in ("CDS_TODAY", "CDS_DATABASE_URL", "CDS_AUTH_MODE", "CDS_ENV"):
        values.pop(name, None)
    return values


@pytest.fixture(scope="module")
def server(env):
    with Gunicorn(env) as served:
        yield served


def placeholders_filled(line: str, workdir, port: int) -> str:
    """The README's synopsis words made concrete, and its port made the served one."""
    request = workdir / "request.json"
    request.write_text(examples.render("urgent-care-dvt", TODAY))
    line = line.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    line = re.sub(r"(?<=example )NAME\b", "urgent-care-dvt", line)
    line = line.replace("REQUEST.json", shlex.quote(str(request)))
    line = line.replace("DATE", (TODAY - timedelta(days=7)).isoformat())
    return line.replace(" FILE", " " + shlex.quote(str(workdir / "report.html")))


def run(line: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", "-c", line],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize(
    "command", [c for c in COMMANDS if runnable(c.line)], ids=lambda c: c.line[:60]
)
def test_readme_command(command, server, env, workdir):
    line = placeholders_filled(command.line, workdir, server.port)
    if line.split()[:2] == ["cds-service", "serve"]:
        return check_serve(line, env)
    result = run(line, env)
    assert result.returncode == 0, f"{line}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert result.stdout.strip() or "--html" in line, f"{line} printed nothing"
    if command.shows is not None:
        check_shows(json.loads(command.shows), json.loads(result.stdout), "$")
    if line.endswith("evaluate -"):  # an example on today's date still gives its cards
        assert json.loads(result.stdout)["cards"], result.stdout
    if "--html" in line:
        assert (workdir / "report.html").read_text().startswith("<!DOCTYPE html>")


def check_serve(line: str, env: dict[str, str]) -> None:
    """`cds-service serve` answers on CDS_PORT until stopped."""
    port = free_port()
    process = subprocess.Popen(
        ["sh", "-c", f"exec {line}"],
        cwd=ROOT,
        env={**env, "CDS_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while not answers(f"http://127.0.0.1:{port}/healthz"):
            assert process.poll() is None, "cds-service serve exited"
            assert time.monotonic() < deadline, "cds-service serve did not answer"
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=30)


def moved(text: str) -> str:
    """README dates (as on the day the examples were written) as they are today."""
    days = (TODAY - examples.AUTHORED).days
    return ISO_DAY.sub(
        lambda m: (date.fromisoformat(m.group()) + timedelta(days)).isoformat(), text
    )


def check_shows(shown, actual, where: str) -> None:
    """``shown`` is ``actual`` trimmed: members and items left out, "..." for text left out."""
    if isinstance(shown, dict):
        assert isinstance(actual, dict), where
        for key, value in shown.items():
            if key != "...":
                assert key in actual, f"{where}.{key} is not in the answer"
                check_shows(value, actual[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(actual, list), where
        items = [item for item in shown if item != "..."]
        assert len(actual) >= len(items), f"{where}: {len(actual)} items, README shows more"
        if "..." not in shown:
            assert len(actual) == len(items), (
                f"{where}: {len(actual)} items, README shows {len(items)}"
            )
        for i, item in enumerate(items):
            check_shows(item, actual[i], f"{where}[{i}]")
    elif isinstance(shown, str) and "..." in shown:
        position = 0
        for fragment in filter(None, (part.strip() for part in moved(shown).split("..."))):
            found = actual.find(fragment, position)
            assert found >= 0, f"{where}: {fragment!r} is not in {actual!r}"
            position = found + len(fragment)
    elif isinstance(shown, str):
        assert actual == moved(shown), where
    else:
        assert actual == shown, where
