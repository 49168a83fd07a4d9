"""A loopback fake FHIR server for the fetch path of `make bench`: every read or search is
answered after a fixed latency (50 ms by default), from the prefetch of a bench request.

It runs in its own process (``start``), on asyncio, with HTTP/1.1 keep-alive, so that it
can hold hundreds of requests waiting at once while costing little CPU: the service
under test, not this server, must be what limits the fetch path. Answers:

- ``GET <base>/Patient/<id>``: the request's Patient;
- ``GET <base>/<Type>?...``: a searchset Bundle of the request's resources of that type
  (what its prefetch key held), empty for types the request has none of;
- anything else: 404 with an OperationOutcome.

Run on its own: ``python bench/fake_fhir.py --size 20 --latency 0.05`` (prints the port).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

BASE = "/fhir"
MAX_HEADER = 64 * 1024


def answers(request: dict) -> dict[str, bytes]:
    """Response bodies by resource type, from a bench request's prefetch."""
    bodies: dict[str, bytes] = {}
    for value in request["prefetch"].values():
        if value.get("resourceType") == "Bundle":
            for entry in value.get("entry", []):
                rtype = entry["resource"]["resourceType"]
                bodies.setdefault(rtype, [])  # type: ignore[arg-type]
                bodies[rtype].append(entry)  # type: ignore[attr-defined]
        else:
            bodies["Patient/"] = value  # type: ignore[assignment]
    out = {
        rtype: orjson.dumps({"resourceType": "Bundle", "type": "searchset", "entry": entries})
        for rtype, entries in bodies.items()
        if rtype != "Patient/"
    }
    out["Patient/"] = orjson.dumps(bodies["Patient/"])
    out["empty"] = orjson.dumps({"resourceType": "Bundle", "type": "searchset", "entry": []})
    return out


def _response(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/fhir+json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


NOT_FOUND = _response(
    "404 Not Found", b'{"resourceType":"OperationOutcome","issue":[{"severity":"error"}]}'
)


def route(target: bytes, prepared: dict[str, bytes]) -> bytes:
    path, _, _query = target.decode("latin-1").partition("?")
    if not path.startswith(BASE + "/"):
        return NOT_FOUND
    parts = path[len(BASE) + 1 :].split("/")
    if len(parts) == 2 and parts[0] == "Patient":
        return prepared["Patient/"]
    if len(parts) == 1 and parts[0][:1].isupper():
        return prepared.get(parts[0], prepared["empty"])
    return NOT_FOUND


async def _serve(sock: socket.socket, prepared: dict[str, bytes], latency: float) -> None:
    loop = asyncio.get_running_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > MAX_HEADER:
                    break
                request_line = head.split(b"\r\n", 1)[0].split(b" ")
                if len(request_line) != 3:
                    break
                await asyncio.sleep(latency)
                writer.write(route(request_line[1], prepared))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, sock=sock, limit=MAX_HEADER + 1024)
    del loop
    async with server:
        await server.serve_forever()


def _run(sock: socket.socket, request: dict, latency: float) -> None:
    prepared = {key: _response("200 OK", body) for key, body in answers(request).items()}
    try:
        asyncio.run(_serve(sock, prepared, latency))
    except KeyboardInterrupt:
        pass


class FakeFhir:
    """The fake server in a child process; ``base`` is its URL, ``stop()`` ends it."""

    def __init__(self, request: dict, latency: float):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}{BASE}"
        ctx = multiprocessing.get_context("fork")
        self.process = ctx.Process(target=_run, args=(self.sock, request, latency), daemon=True)
        self.process.start()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout=5)
        self.sock.close()


def fetch_request(request: dict, base: str, token: str = "bench-token") -> dict:
    """The same hook call without prefetch: the service must fetch every key from ``base``."""
    return {
        "hook": request["hook"],
        "hookInstance": request["hookInstance"],
        "fhirServer": base,
        "fhirAuthorization": {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cds-service",
        },
        "context": request["context"],
    }


def main() -> None:
    from requests_gen import build_request

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    server = FakeFhir(build_request(args.size), args.latency)
    print(server.base, flush=True)
    try:
        server.process.join()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
