"""The Node reference peer for `make bench`: cds-hooks/sandbox-cds-services, patient-greeting.

Its code is never part of this repository. Give a checkout of it with ``--node-peer DIR`` or
``BENCH_NODE_PEER=DIR`` (a checkout of the public ``cds-hooks/sandbox-cds-services`` repository);
``prepare`` copies it to a build directory outside the repository and changes the copy only:

- its ``package-lock.json`` is dropped and ``npm install --omit=dev`` runs from the npm
  registry: the lock file (and ``@lhncbc/ucum-lhc``, through ``fhirpath``) names
  ``fs@0.0.1-security``, a placeholder the registry no longer serves, so an npm
  ``overrides`` entry points ``fs`` at an empty local package (Node's built-in ``fs`` is
  what ``require('fs')`` loads anyway), and another pins ``antlr4`` to 4.8.0 (newer ones
  refuse the ``require('antlr4/index')`` of fhirpath 0.17, which the lock file had avoided);
- its JSON body limit (body-parser's stock 100 kB, which answers 413 at 200 resources) is
  raised to 50 MB, in ``index.js`` of the copy.

patient-greeting parses the request and answers one card; it does no clinical work.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

PATH = "/cds-services/patient-greeting"
BODY_LIMIT = "50mb"
# Without the lock file, fhirpath@0.17's "antlr4: ^4.7.1" resolves to 4.13, whose "exports"
# refuse the require('antlr4/index') fhirpath makes; 4.8.0 is the last release that allows it.
ANTLR4 = "4.8.0"


def prepare(source: Path, build: Path) -> Path:
    """A runnable copy of ``source`` in ``build`` (reused when already installed)."""
    source = Path(source).resolve()
    if (
        not (source / "index.js").is_file()
        or not (source / "services" / "patient-greeting.js").is_file()
    ):
        raise SystemExit(f"{source} is not a checkout of cds-hooks/sandbox-cds-services")
    if not shutil.which("node") or not shutil.which("npm"):
        raise SystemExit("the Node peer needs node and npm on PATH")
    stamp = build / ".bench-installed"
    if stamp.is_file():
        return build
    if build.exists():
        shutil.rmtree(build)
    shutil.copytree(
        source, build, ignore=shutil.ignore_patterns(".git", "node_modules", "package-lock.json")
    )
    (build / "stub-fs").mkdir(exist_ok=True)
    (build / "stub-fs" / "package.json").write_text(
        json.dumps({"name": "fs", "version": "0.0.1-security"})
    )
    package = json.loads((build / "package.json").read_text())
    package["overrides"] = {"fs": "file:./stub-fs", "antlr4": ANTLR4}
    (build / "package.json").write_text(json.dumps(package, indent=2))
    index = build / "index.js"
    text = index.read_text()
    if "bodyParser.json()" not in text:
        raise SystemExit(
            "index.js of the Node peer has no bodyParser.json(): cannot raise its limit"
        )
    index.write_text(
        text.replace("bodyParser.json()", f"bodyParser.json({{ limit: '{BODY_LIMIT}' }})")
    )
    subprocess.run(
        ["npm", "install", "--omit=dev", "--no-audit", "--no-fund"],
        cwd=build,
        check=True,
        timeout=600,
        stdout=subprocess.DEVNULL,
    )
    stamp.touch()
    return build


def command(build: Path) -> list[str]:
    return [shutil.which("node") or "node", str(build / "server.js")]
