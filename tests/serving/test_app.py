"""Tests of workbench/serving/app.py: `workbench serve` started as a real uvicorn process on a free
loopback port, queried over real HTTP, good requests and bad ones."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.retriever import MAX_QUERY_CHARS, Retriever

pytestmark = pytest.mark.slow  # starts a uvicorn server process

REPO = Path(__file__).resolve().parents[2]
STARTUP_LIMIT_S = 600  # a generous bound for a loaded CI machine; the test never asserts on speed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Client:
    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        kind = response.getheader("content-type", "")
        return response.status, json.loads(payload) if "json" in kind else payload.decode()

    def search(self, **fields):
        return self.request("POST", "/search", json.dumps(fields).encode())


@pytest.fixture(scope="module")
def server(adi_index_dir: Path):
    """`workbench serve INDEX --port P` in a subprocess (default host); yields (process, client, port)."""
    port = free_port()
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "serve", str(adi_index_dir), "--port", str(port)],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = Client(port)
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            if client.request("GET", "/health")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("server did not answer /health")
        time.sleep(0.5)
    yield process, client, port
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def test_search_answers_as_the_library_does(server, adi_index_dir: Path):
    _, client, _ = server
    status, body = client.search(query="computer retrieval of documents", k=5)
    assert status == 200, body
    expected = Retriever.load(adi_index_dir).search("computer retrieval of documents", k=5)
    assert [hit["doc_id"] for hit in body["hits"]] == [hit.doc_id for hit in expected]
    assert [hit["score"] for hit in body["hits"]] == pytest.approx([hit.score for hit in expected], abs=1e-5)
    assert body["hits"][0].keys() == {"rank", "doc_id", "score", "title", "text", "chunk_id", "chunk_text"}
    assert body["hits"][0]["chunk_text"] == expected[0].chunk_text


def test_concurrent_requests_each_get_their_own_answer(server, adi, adi_index_dir: Path):
    from concurrent.futures import ThreadPoolExecutor

    _, client, _ = server
    queries = list(adi.judged_queries("test").values())[:16]
    ks = [3 + position % 5 for position in range(len(queries))]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda args: client.search(query=args[0], k=args[1]), zip(queries, ks)))
    expected = Retriever.load(adi_index_dir).search_many(queries, k=max(ks))
    for (status, body), k, hits in zip(answers, ks, expected):
        assert status == 200, body
        assert [hit["doc_id"] for hit in body["hits"]] == [hit.doc_id for hit in hits[:k]]
    status, health = client.request("GET", "/health")
    assert health["queries_answered"] >= len(queries) and 1 <= health["batches_answered"] <= health["queries_answered"]


def test_search_filters_on_doc_ids(server):
    _, client, _ = server
    _, full = client.search(query="abstracting and indexing", k=20)
    allowed = [full["hits"][3]["doc_id"], full["hits"][7]["doc_id"]]
    status, body = client.search(query="abstracting and indexing", k=5, doc_ids=allowed)
    assert status == 200
    assert [hit["doc_id"] for hit in body["hits"]] == allowed


def test_health_info_and_docs(server):
    _, client, _ = server
    status, health = client.request("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["documents"] == 82 and health["chunks"] > 82
    status, info = client.request("GET", "/info")
    assert status == 200
    assert info["config"]["name"] == "adi-hybrid"
    assert info["manifest"]["models"]["retrievers.dense"]["fingerprint"]
    assert info["manifest"]["corpus"]["documents"] == 82 and "bm25s" in info["manifest"]["packages"]
    assert info["provenance"]["heldout"]["verdict"] == "beats every baseline"
    status, page = client.request("GET", "/docs")
    assert status == 200 and "swagger" in page.lower()
    status, schema = client.request("GET", "/openapi.json")
    assert status == 200 and "/search" in schema["paths"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b'{"query": "retrieval", "k": ', 400, "malformed JSON"),
        (b"[1, 2]", 422, "body"),
        (json.dumps({"query": "", "k": 5}).encode(), 422, "query: String should have at least 1 character"),
        (json.dumps({"query": "   ", "k": 5}).encode(), 422, "non-empty string"),
        (json.dumps({"query": "x" * (MAX_QUERY_CHARS + 1)}).encode(), 422, "query: String should have at most"),
        (json.dumps({"query": "retrieval", "k": 0}).encode(), 422, "k: Input should be greater than or equal to 1"),
        (json.dumps({"query": "retrieval", "k": 31}).encode(), 422, "k: must be at most 30"),
        (json.dumps({"query": "retrieval", "k": "ten"}).encode(), 422, "k: Input should be a valid integer"),
        (json.dumps({"query": 42}).encode(), 422, "query: Input should be a valid string"),
        (json.dumps({"k": 5}).encode(), 422, "query: Field required"),
        (json.dumps({"query": "retrieval", "top": 5}).encode(), 422, "top: Extra inputs are not permitted"),
        (json.dumps({"query": "retrieval", "doc_ids": "d1"}).encode(), 422, "doc_ids: Input should be a valid list"),
    ],
)
def test_bad_requests_get_a_clear_4xx(server, body, status, fragment):
    process, client, _ = server
    got_status, answer = client.request("POST", "/search", body)
    assert got_status == status, answer
    assert fragment in answer["error"]
    assert process.poll() is None
    assert client.request("GET", "/health")[0] == 200, "the server keeps serving"


def test_oversized_body_is_refused_before_it_is_read(server):
    process, client, port = server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest("POST", "/search")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(50 * 1024 * 1024))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and "request body over" in json.loads(response.read())["error"]
    finally:
        connection.close()
    assert process.poll() is None and client.request("GET", "/health")[0] == 200


def test_wrong_method_and_path(server):
    _, client, _ = server
    assert client.request("GET", "/search")[0] == 405
    assert client.request("GET", "/nowhere")[0] == 404


def test_binds_loopback_by_default(server):
    _, _, port = server
    listening = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # 0A = LISTEN
            listening.append(address)
    assert listening == ["0100007F"], "listening on 127.0.0.1 only"


def test_serve_refuses_a_folder_that_is_not_an_index(tmp_path: Path):
    from typer.testing import CliRunner

    from workbench.cli import app

    result = CliRunner().invoke(app, ["serve", str(tmp_path), "--port", str(free_port())])
    assert result.exit_code == 2
    assert "not a workbench index" in result.output
