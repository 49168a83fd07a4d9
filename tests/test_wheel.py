"""The wheel built from the repository serves cards without the source tree (issue 11).

Builds the wheel offline (setuptools from the dev venv, no build isolation), installs it
without dependencies into a fresh venv that borrows the dev venv's installed dependencies
(a path entry, not the editable install), and runs ``cds-service`` from an empty directory.
Slow (a build and an install, about 10 s): marked ``slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from cds_service.storage import migrations

ROOT = Path(__file__).resolve().parent.parent
# What the build reads: the package, the rules, and the metadata files.
BUILD_INPUTS = ["pyproject.toml", "setup.py", "README.md", "cds_service", "cards", "fhir_examples"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")

pytestmark = pytest.mark.slow


def run(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with only the wheel installed; the dependencies come from the dev venv."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=IGNORE)
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run(
        *pip,
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--wheel-dir",
        work / "dist",
        source,
        cwd=work,
    )
    (wheel,) = (work / "dist").glob("cds_service-*.whl")

    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    python = venv / "bin" / "python"
    site = run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work
    ).stdout.strip()
    # Dependencies: the dev venv's site-packages as a plain path entry, so its .pth files
    # (the editable install of cds_service among them) are not processed.
    Path(site, "dev-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(*pip, "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel, cwd=work)
    return venv


def clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CDS_") and k not in {"PYTHONPATH", "PYTHONHOME"}
    }
    env["CDS_TODAY"] = "2026-11-24"
    return env


def test_installed_package_evaluates_an_example_from_an_empty_directory(installed, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(
        installed / "bin" / "cds-service",
        "evaluate",
        ROOT / "fhir_examples" / "urgent-care-dvt.json",
        cwd=empty,
        env=clean_env(),
    )
    cards = json.loads(result.stdout)["cards"]
    assert "urgent-care" in {card["source"]["topic"]["code"] for card in cards}
    assert list(empty.iterdir()) == []  # nothing written to the working directory


def test_installed_package_prints_the_examples_dated_today(installed, tmp_path):
    """``cds-service example`` reads the examples shipped in the wheel (no source tree)."""
    env = {k: v for k, v in clean_env().items() if k != "CDS_TODAY"}
    listed = run(installed / "bin" / "cds-service", "example", "--list", cwd=tmp_path, env=env)
    assert listed.stdout.split() == sorted(p.stem for p in (ROOT / "fhir_examples").glob("*.json"))
    written = run(
        installed / "bin" / "cds-service",
        *("example", "urgent-care-dvt", "--today", "2026-11-24"),
        cwd=tmp_path,
        env=env,
    )
    assert written.stdout == (ROOT / "fhir_examples" / "urgent-care-dvt.json").read_text()


def test_installed_package_reads_its_own_copy_of_the_rules(installed, tmp_path):
    code = (
        "import cds_service, json; from cds_service.config import Settings; "
        "print(json.dumps([cds_service.__file__, str(Settings.from_env({}).cards_dir)]))"
    )
    result = run(installed / "bin" / "python", "-c", code, cwd=tmp_path, env=clean_env())
    module, cards_dir = (Path(p) for p in json.loads(result.stdout))
    assert module.is_relative_to(installed) and cards_dir.is_relative_to(installed)
    shipped = sorted(p.relative_to(cards_dir) for p in cards_dir.rglob("*.yaml"))
    assert shipped == sorted(
        p.relative_to(ROOT / "cards") for p in (ROOT / "cards").rglob("*.yaml")
    )
    code = "from cds_service.storage import migrations; print(migrations.latest_version())"
    result = run(installed / "bin" / "python", "-c", code, cwd=tmp_path, env=clean_env())
    assert result.stdout.strip() == migrations.latest_version()  # the revisions are shipped
    result = run(installed / "bin" / "cds-service", "check-rules", cwd=tmp_path, env=clean_env())
    assert result.stdout.startswith("OK: ")


def test_installed_package_renders_the_explanation_pages(installed, tmp_path):
    """The templates ship with the package (package data of cds_service.render.explain)."""
    code = (
        "from cds_service.config import Settings; from cds_service.engine import load_rules; "
        "from cds_service.render.explain import Explainer; "
        "cards = Settings.from_env({}).cards_dir; "
        "e = Explainer(load_rules(cards), cards); "
        "print(len(e.index_html()), 'nephrology' in e.route_html('nephrology'))"
    )
    result = run(installed / "bin" / "python", "-c", code, cwd=tmp_path, env=clean_env())
    size, found = result.stdout.split()
    assert int(size) > 1000 and found == "True"
