"""`workbench serve` as a real subprocess on a free loopback port, and a small HTTP client for it.

The tests of tests/serving share these; nothing here is mocked: a real uvicorn over a real index.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STARTUP_LIMIT_S = 600  # a generous bound for a loaded CI machine; no test asserts on speed
PIECE = b"x" * 65536  # one piece of a chunked upload


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Client:
    def __init__(self, port: int, headers: dict | None = None):
        self.port = port
        self.headers = headers or {}

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """Returns (status, JSON body or text, response headers)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request(
                method, path, body=body, headers={"Content-Type": "application/json", **self.headers, **(headers or {})}
            )
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        kind = response.getheader("content-type", "")
        return response.status, json.loads(payload) if "json" in kind else payload.decode(), dict(response.getheaders())

    def get(self, path: str, headers: dict | None = None):
        status, body, _ = self.request("GET", path, headers=headers)
        return status, body

    def search(self, headers: dict | None = None, **fields):
        status, body, _ = self.request("POST", "/search", json.dumps(fields).encode(), headers)
        return status, body

    def chunked_upload(self, total_bytes: int, headers: dict | None = None) -> tuple[int, dict, int]:
        """POSTs up to ``total_bytes`` to /search with ``Transfer-Encoding: chunked`` (no length declared).

        Stops offering pieces once the server has answered or closed; returns (status, JSON body,
        bytes handed to the socket).
        """
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        sent = 0

        def pieces() -> Iterator[bytes]:
            nonlocal sent
            import select

            while sent < total_bytes:
                if select.select([connection.sock], [], [], 0)[0]:
                    return  # the server answered (or closed): no point offering more
                sent += len(PIECE)
                yield PIECE

        try:
            try:
                connection.request(
                    "POST",
                    "/search",
                    body=pieces(),
                    headers={"Content-Type": "application/json", **self.headers, **(headers or {})},
                    encode_chunked=True,
                )
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server stopped reading and closed; its answer is already on the way
            response = connection.getresponse()
            return response.status, json.loads(response.read()), sent
        finally:
            connection.close()


@dataclass
class Server:
    """A running `workbench serve`: its process, a client, its port, and the lines it has written."""

    process: subprocess.Popen
    port: int
    client: Client
    lines: list[str] = field(default_factory=list)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_serve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `workbench serve ARGS` to completion (for the cases that must not start); returns it."""
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", "serve", *args],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=STARTUP_LIMIT_S,
    )


def start_server(index: Path, *args: str, env: dict | None = None, headers: dict | None = None) -> Server:
    """Starts `workbench serve INDEX --port P ARGS` and returns once it has printed its "serving" line.

    That line promises a listening port: the first request is made at once, with no retry.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "serve", str(index), "--port", str(port), *args],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read_lines() -> None:  # drains the pipe for the server's whole life, so it never blocks on a full pipe
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read_lines, daemon=True).start()
    server = Server(process, port, Client(port, headers))
    while True:
        try:
            line = lines.get(timeout=STARTUP_LIMIT_S)
        except queue.Empty:
            server.stop()
            raise AssertionError("server printed no 'serving' line") from None
        if line is None:
            process.wait()
            raise AssertionError(f"server exited with {process.returncode}:\n" + "\n".join(server.lines))
        server.lines.append(line)
        if line.startswith("serving "):
            break
    assert server.client.get("/health")[0] == 200, "the 'serving' line came before the port answered"
    return server


def ask_served(index: Path, user_code: Path, query: str, k: int) -> tuple[tuple[int, object], tuple[int, object]]:
    """Serves ``index`` with ``user_code`` (the folder a user's own components lie in) before PYTHONPATH,
    asks ``/search`` for ``query``'s ``k`` hits and ``/info``, and stops the server; returns both
    (status, body) pairs."""
    python_path = os.pathsep.join(filter(None, [str(user_code), os.environ.get("PYTHONPATH")]))
    server = start_server(index, env={"PYTHONPATH": python_path})
    try:
        return server.client.search(query=query, k=k), server.client.get("/info")
    finally:
        server.stop()
