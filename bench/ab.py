"""Server time of two code trees on the same machine, interleaved request by request.

``make bench`` compares the service with the parse-only baseline of its own tree; when the
machine changes (another CPU, other work sharing it) only that ratio carries over, and even
it moves between runs minutes apart. To tell a change of the code from a change of the
machine, this runs the service and the baseline of every tree given at once (gunicorn, the
bench's settings) and sends the same request to each in turn, so every tree sees the same
moments of the machine. Each tree is imported from its own directory (``PYTHONPATH``,
``--chdir``) with its own rule files (``CDS_CARDS_DIR``); the Python packages are this
virtualenv's.

    python bench/ab.py --tree base=/tmp/base --tree now=. --rounds 300 --cycles 2

Prints, per cycle, tree and size, the median server time of service and baseline and their
ratio, then the median of the cycles' ratios.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from requests_gen import build_request  # noqa: E402
from run import (
    PATH,
    PLACEHOLDER,
    TODAY,
    Server,
    fresh_body,
    percentile,
    request_once,
    server_ms,
)  # noqa: E402

WARMUP = 20  # calls per server and size before measuring


def _env(tree: Path, data: Path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CDS_") and k not in ("PROMETHEUS_MULTIPROC_DIR", "PYTHONPATH")
    }
    env.update(
        {
            "PYTHONPATH": str(tree),
            "CDS_CARDS_DIR": str(tree / "cards"),
            "CDS_AUTH_MODE": "off",
            "CDS_DATA_DIR": str(data),
            "CDS_TODAY": TODAY,
            "CDS_WORKERS": "2",
            "CDS_LOG_LEVEL": "INFO",
        }
    )
    data.mkdir(parents=True)
    return env


def _start(trees: dict[str, Path], workdir: Path, cycle: int) -> dict[tuple[str, str], Server]:
    servers = {}
    for name, tree in trees.items():
        env = _env(tree, workdir / f"data-{name}-{cycle}")
        servers[(name, "service")] = Server(
            f"{name}-service-{cycle}", "cds_service.web.app:create_app()", env, workdir, chdir=tree
        )
        servers[(name, "baseline")] = Server(
            f"{name}-baseline-{cycle}", "baseline:app", env, workdir, chdir=tree / "bench"
        )
    try:
        for server in servers.values():
            server.wait_ready()  # stops its own server and exits when it does not start
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def _measure(servers: dict, body: bytes, rounds: int) -> dict[tuple[str, str], list[float]]:
    """The same request to every server in turn (the order rotated each round)."""
    keys = list(servers)
    conns = {k: http.client.HTTPConnection("127.0.0.1", servers[k].port, timeout=30) for k in keys}
    for key in keys:
        for _ in range(WARMUP):
            status, data, _ = request_once(servers[key].port, "POST", PATH, fresh_body(body))
            if status != 200:
                raise SystemExit(f"{key} answered {status}: {data[:300]!r}")
    times: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
    for i in range(rounds):
        shift = i % len(keys)
        for key in keys[shift:] + keys[:shift]:
            _, _, timing = request_once(
                servers[key].port, "POST", PATH, fresh_body(body), conns[key]
            )
            times[key].append(server_ms(timing))
    for conn in conns.values():
        conn.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="name=path")
    parser.add_argument("--sizes", default="20,200")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--cycles", type=int, default=2)
    args = parser.parse_args(argv)
    trees = {}
    for item in args.tree:
        name, _, path = item.partition("=")
        trees[name] = Path(path).resolve()
    sizes = [int(s) for s in args.sizes.split(",")]
    bodies = {}
    for size in sizes:
        request = build_request(size)
        request["hookInstance"] = PLACEHOLDER
        bodies[size] = orjson.dumps(request)
    workdir = Path(tempfile.mkdtemp(prefix="cds-ab-"))
    ratios: dict[tuple[str, int], list[float]] = {}
    versus: dict[tuple[str, int], list[float]] = {}  # service time / the first tree's
    first = next(iter(trees))
    for cycle in range(args.cycles):
        servers = _start(trees, workdir, cycle)
        try:
            for size in sizes:
                times = _measure(servers, bodies[size], args.rounds)
                reference = statistics.median(times[(first, "service")])
                for name in trees:
                    service_times = times[(name, "service")]
                    svc = statistics.median(service_times)
                    base = statistics.median(times[(name, "baseline")])
                    ratios.setdefault((name, size), []).append(svc / base)
                    versus.setdefault((name, size), []).append(svc / reference)
                    print(
                        f"cycle {cycle} {name:>8} {size:>5}: service {svc:.3f} ms "
                        f"(p90 {percentile(service_times, 90):.3f}), baseline {base:.3f} ms, "
                        f"ratio {svc / base:.2f}, service / {first}'s {svc / reference:.3f}",
                        flush=True,
                    )
        finally:
            for server in servers.values():
                server.stop()
    print(f"median over cycles: ratio service / baseline; service time / {first}'s")
    for (name, size), values in ratios.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        paired = versus[(name, size)]
        print(
            f"  {name:>8} {size:>5}: {statistics.median(values):.2f} ({shown}); "
            f"{statistics.median(paired):.3f} ({', '.join(f'{v:.3f}' for v in paired)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
