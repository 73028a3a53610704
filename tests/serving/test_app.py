"""Tests of workbench/serving/app.py (and its guards and listener): `workbench serve` started as a real
uvicorn process on a free loopback port, queried over real HTTP, good requests and bad ones."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from served import REPO, Client, Server, free_port, run_serve, start_server

from workbench.retriever import MAX_QUERY_CHARS, Retriever

pytestmark = pytest.mark.slow  # starts a uvicorn server process

API_KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def server(adi_index_dir: Path):
    """`workbench serve INDEX --port P` in a subprocess (default host, no key); yields (process, client, port)."""
    served = start_server(adi_index_dir)
    yield served.process, served.client, served.port
    served.stop()


@pytest.fixture(scope="module")
def keyed_server(adi_bm25_index_dir: Path):
    """A BM25 index served with `--api-key-env WB_TEST_API_KEY --info-details`."""
    served = start_server(
        adi_bm25_index_dir, "--api-key-env", "WB_TEST_API_KEY", "--info-details", env={"WB_TEST_API_KEY": API_KEY}
    )
    yield served
    served.stop()


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
    status, health = client.get("/health")
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
    status, health = client.get("/health")
    assert status == 200 and health["status"] == "ok" and health["documents"] == 82 and health["chunks"] > 82
    status, info = client.get("/info")
    assert status == 200
    assert info["config"]["name"] == "adi-hybrid"
    assert info["manifest"]["models"]["retrievers.dense"]["fingerprint"]
    assert info["manifest"]["corpus"]["documents"] == 82 and "bm25s" in info["manifest"]["packages"]
    assert info["provenance"]["heldout"]["verdict"] == "beats every baseline"
    status, schema = client.get("/openapi.json")
    assert status == 200 and "/search" in schema["paths"]


def test_no_interactive_docs_that_would_load_scripts_from_a_cdn(server):
    _, client, _ = server
    for path in ("/docs", "/redoc"):
        status, body = client.get(path)
        assert status == 404 and "no such path" in body["error"]


def test_info_shows_names_not_absolute_paths_nor_the_commit(server, adi_index_dir: Path):
    _, client, _ = server
    _, info = client.get("/info")
    assert info["index"] == adi_index_dir.name
    assert info["manifest"]["corpus"]["source"] == "adi"  # saved as an absolute path
    assert "+" not in info["manifest"]["code_version"]
    text = json.dumps(info)
    assert str(REPO) not in text and str(adi_index_dir.parent) not in text
    assert not [value for value in strings(info) if value.startswith("/")]


def strings(value) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return [value] if isinstance(value, str) else []


def test_public_info_cuts_absolute_paths_and_the_commit_and_keeps_model_ids():
    from workbench.serving.app import public_info

    info = {
        "config": {"retrievers": [{"model": "sentence-transformers/all-MiniLM-L6-v2"}, {"model": "/home/me/enc"}]},
        "manifest": {"corpus": {"source": "/srv/data/kb", "documents": 3}, "code_version": "0.4.0+3f2a9c1"},
        "provenance": {"corpus": "corpora/adi", "windows": "C:\\data\\kb", "home": "~/kb"},
    }
    assert public_info(info) == {
        "config": {"retrievers": [{"model": "sentence-transformers/all-MiniLM-L6-v2"}, {"model": "enc"}]},
        "manifest": {"corpus": {"source": "kb", "documents": 3}, "code_version": "0.4.0"},
        "provenance": {"corpus": "corpora/adi", "windows": "kb", "home": "kb"},
    }


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
        # Strict, as config files are: neither a boolean nor a numeric string is an integer.
        (json.dumps({"query": "retrieval", "k": True}).encode(), 422, "k: Input should be a valid integer"),
        (json.dumps({"query": "retrieval", "k": "5"}).encode(), 422, "k: Input should be a valid integer"),
        (json.dumps({"query": "retrieval", "k": 5.0}).encode(), 422, "k: Input should be a valid integer"),
        (json.dumps({"query": "retrieval", "doc_ids": [1]}).encode(), 422, "doc_ids.0: Input should be a valid string"),
    ],
)
def test_bad_requests_get_a_clear_4xx(server, body, status, fragment):
    process, client, _ = server
    got_status, answer, _ = client.request("POST", "/search", body)
    assert got_status == status, answer
    assert fragment in answer["error"]
    assert process.poll() is None
    assert client.get("/health")[0] == 200, "the server keeps serving"


def test_oversized_body_is_refused_before_it_is_read(server):
    import http.client

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
    assert process.poll() is None and client.get("/health")[0] == 200


def test_a_chunked_body_is_cut_off_at_the_limit(server):
    from workbench.serving.app import MAX_BODY_BYTES

    process, client, _ = server
    status, body, sent = client.chunked_upload(64 * 1024 * 1024)
    assert status == 413 and body["error"] == f"request body over {MAX_BODY_BYTES} bytes"
    assert sent < 64 * 1024 * 1024, "the server answered before the client had offered the whole body"
    assert process.poll() is None and client.get("/health")[0] == 200
    assert client.search(query="computer retrieval", k=3)[0] == 200


def test_wrong_method_and_path_answer_with_the_error_field(server):
    _, client, _ = server
    status, body, headers = client.request("GET", "/search")
    assert status == 405 and body["error"] == "GET /search: method not allowed; use POST"
    assert body["detail"] == "Method Not Allowed" and headers["allow"] == "POST"
    status, body = client.get("/nowhere")
    assert status == 404 and body["error"].startswith("no such path: /nowhere; this service answers POST /search")
    assert body["detail"] == "Not Found"


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


def test_a_port_in_use_is_one_line_before_the_index_loads(adi_bm25_index_dir: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(str(adi_bm25_index_dir), "--port", str(port))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: port {port} is in use; stop what uses it or pass another --port"
    ]
    assert "serving" not in result.stdout


@pytest.mark.parametrize(("value", "says"), [(None, "is not set"), ("", "is empty"), ("  ", "is empty")])
def test_an_api_key_variable_that_is_unset_or_empty_is_refused_at_start(adi_bm25_index_dir: Path, value, says):
    import os

    env = {key: item for key, item in os.environ.items() if key != "WB_TEST_API_KEY"}
    if value is not None:
        env["WB_TEST_API_KEY"] = value
    result = run_serve(str(adi_bm25_index_dir), "--port", str(free_port()), "--api-key-env", "WB_TEST_API_KEY", env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: --api-key-env WB_TEST_API_KEY: the environment variable WB_TEST_API_KEY {says}; "
        + ("export the key in it" if value is None else "put the key in it")
    ]


def test_an_api_key_with_whitespace_around_it_is_refused_at_start(adi_bm25_index_dir: Path):
    import os

    env = {**os.environ, "WB_TEST_API_KEY": " key "}  # HTTP strips a header's whitespace: no request could match
    result = run_serve(str(adi_bm25_index_dir), "--port", str(free_port()), "--api-key-env", "WB_TEST_API_KEY", env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: --api-key-env WB_TEST_API_KEY: the key starts or ends with whitespace; remove it"
    ]


def test_requests_without_the_api_key_get_401(keyed_server: Server):
    client = Client(keyed_server.port)
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        status, body = client.search(headers=headers, query="computer retrieval", k=3)
        assert status == 401 and "missing or wrong API key" in body["error"], headers
        assert client.get("/info", headers)[0] == 401 and client.get("/openapi.json", headers)[0] == 401
    status, body = client.get("/nowhere")
    assert status == 401, "an unknown path says nothing to a caller without the key"
    status, body, _ = client.chunked_upload(64 * 1024 * 1024)
    assert status == 401, "no key, no body read"
    assert client.get("/health")[0] == 200, "/health stays open for liveness probes"


def test_requests_with_the_api_key_are_answered(keyed_server: Server):
    client = Client(keyed_server.port)
    accepted = ({"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}, {"authorization": f"bearer {API_KEY}"})
    for headers in accepted:
        status, body = client.search(headers=headers, query="computer retrieval", k=3)
        assert status == 200 and len(body["hits"]) == 3
    assert client.get("/openapi.json", {"X-API-Key": API_KEY})[0] == 200


def test_info_details_show_paths_when_the_operator_asks(keyed_server: Server, adi_bm25_index_dir: Path):
    status, info = Client(keyed_server.port).get("/info", {"X-API-Key": API_KEY})
    assert status == 200
    assert info["index"] == str(adi_bm25_index_dir.resolve())
    assert Path(info["manifest"]["corpus"]["source"]).is_absolute()


def test_serving_line_and_no_warning_on_loopback(keyed_server: Server):
    assert keyed_server.lines[-1] == (
        f"serving {keyed_server.lines[-1].split()[1]} (82 documents) on http://127.0.0.1:{keyed_server.port}"
        "  (schema: /openapi.json)"
    )
    assert not [line for line in keyed_server.lines if line.startswith("warning")]


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("fe80::1%eth0", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool):
    from workbench.serving.listener import is_loopback

    assert is_loopback(address) is loopback


def test_beyond_loopback_without_a_key_gets_a_warning():
    from workbench.serving.listener import exposure_warning

    assert "no --api-key-env is set" in exposure_warning("0.0.0.0", "0.0.0.0", api_key=None)
    assert exposure_warning("0.0.0.0", "0.0.0.0", api_key="k") is None
    assert exposure_warning("127.0.0.1", "localhost", api_key=None) is None
