"""A bounded load test of `workbench serve` (workbench/serving/): 16 concurrent clients and chunked
oversize uploads in the same run, against a real server on loopback over a BM25 index of ADI.

Asserts no 5xx and that the server's memory stays within 100 MiB of its value after start-up,
peak included (VmHWM): an upload must be cut off at the body limit, not read whole.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from served import start_server

pytestmark = pytest.mark.slow  # starts a uvicorn server process

CLIENTS = 16
REQUESTS_PER_CLIENT = 40
UPLOADS = 2
UPLOAD_BYTES = 256 * 1024 * 1024  # offered by each upload; read whole, two would add ~1 GiB
MEMORY_SLACK = 100 * 1024 * 1024


def memory(pid: int) -> dict[str, int]:
    """Returns VmRSS and VmHWM (peak RSS) of process ``pid``, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def test_concurrent_clients_and_oversize_uploads(adi, adi_bm25_index_dir: Path):
    server = start_server(adi_bm25_index_dir)
    try:
        client = server.client
        queries = list(adi.queries.values())
        assert client.search(query=queries[0], k=10)[0] == 200  # the first search builds what it keeps
        start = memory(server.process.pid)

        def one_client(number: int) -> list[int]:
            statuses = []
            for position in range(REQUESTS_PER_CLIENT):
                query = queries[(number * REQUESTS_PER_CLIENT + position) % len(queries)]
                if position % 10 == 9:  # a bad request among the good ones: 4xx, never 5xx
                    status, _, _ = client.request("POST", "/search", json.dumps({"query": query, "k": "5"}).encode())
                else:
                    status, body = client.search(query=query, k=1 + position % 10)
                    assert status != 200 or len(body["hits"]) == 1 + position % 10
                statuses.append(status)
            return statuses

        with ThreadPoolExecutor(max_workers=CLIENTS + UPLOADS) as pool:
            uploads = [pool.submit(client.chunked_upload, UPLOAD_BYTES) for _ in range(UPLOADS)]
            searches = [pool.submit(one_client, number) for number in range(CLIENTS)]
            statuses = [status for future in searches for status in future.result()]
            upload_answers = [future.result() for future in uploads]

        assert [status for status in statuses if status >= 500] == []
        assert statuses.count(422) == CLIENTS * (REQUESTS_PER_CLIENT // 10)
        assert statuses.count(200) == len(statuses) - statuses.count(422)
        assert [status for status, _, _ in upload_answers] == [413] * UPLOADS
        assert all(sent < UPLOAD_BYTES for _, _, sent in upload_answers)
        assert client.get("/health")[0] == 200
        end = memory(server.process.pid)
        assert end["VmRSS"] - start["VmRSS"] < MEMORY_SLACK, (start, end)
        assert end["VmHWM"] - max(start["VmHWM"], start["VmRSS"]) < MEMORY_SLACK, (start, end)
    finally:
        server.stop()
