"""Serving a saved index: HTTP throughput and latency under concurrent clients, in-process search, update cost.

1. Builds the index of ``--config`` (default configs/hybrid.toml) over every document, cold (fresh
   cache: every document chunked, tokenised and encoded) and saves it: the full rebuild.
2. Builds the index of all but the last ``--update-fraction`` of the documents (from that cache,
   untimed), loads it, adds the held-back documents with ``Retriever.add`` (no cache, so they are
   encoded afresh) and saves it: the update. Checks that the updated index ranks the test queries
   as the full build does.
3. In-process: ``Retriever.search`` one query at a time over the test queries (p50/p95, q/s),
   and ``search_many`` of all of them in one batch (q/s).
4. HTTP: ``workbench serve`` in a subprocess on a free 127.0.0.1 port; for each ``--clients`` level,
   that many client threads (one keep-alive connection each) send the test queries (k = 10) until
   ``--requests`` answers came back or ``--level-limit-s`` passed: q/s, p50/p95 per request, and the
   mean batch the server formed (from /health).

    .venv/bin/python benchmarks/serve.py [--corpus ../shared/corpora/scifact] [--max-docs N]
        [--config configs/hybrid.toml] [--clients 1 4 16] [--requests 300] [--update-fraction 0.01]
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness

NAME = "serve"
SPLIT = "test"
K = 10


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def latency_figures(latencies_ms: list[float], wall_s: float) -> dict[str, float]:
    return {
        "requests": len(latencies_ms),
        "qps": len(latencies_ms) / wall_s if wall_s > 0 else 0.0,
        "p50_ms": statistics.median(latencies_ms),
        "p95_ms": percentile(latencies_ms, 0.95),
        "wall_s": wall_s,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def start_server(index: Path, port: int, limit_s: float = 600) -> subprocess.Popen:
    command = [sys.executable, "-m", "workbench.cli", "serve", str(index), "--port", str(port)]
    process = subprocess.Popen(command, cwd=harness.REPO_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            get_json(port, "/health")
            return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("server did not start")


def drive(port: int, queries: list[str], clients: int, requests: int, limit_s: float) -> tuple[dict, list]:
    """Sends queries from ``clients`` threads until ``requests`` answers or ``limit_s``; returns figures, answers."""
    lock = threading.Lock()
    latencies: list[float] = []
    answers: dict[int, list[str]] = {}
    errors: list[str] = []
    next_request = iter(range(requests))
    deadline = time.monotonic() + limit_s

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while time.monotonic() < deadline:
                with lock:
                    number = next(next_request, None)
                if number is None:
                    return
                body = json.dumps({"query": queries[number % len(queries)], "k": K})
                started = time.perf_counter()
                connection.request("POST", "/search", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = json.loads(response.read())
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    if response.status != 200:
                        errors.append(f"{response.status}: {payload}")
                    else:
                        latencies.append(elapsed)
                        answers[number] = [hit["doc_id"] for hit in payload["hits"]]
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, first: {errors[0]}")
    return latency_figures(latencies, wall), answers


def main() -> None:
    parser = harness.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=harness.REPO_ROOT / "configs" / "hybrid.toml")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--requests", type=int, default=300, help="answers per concurrency level (default: %(default)s)"
    )
    parser.add_argument(
        "--level-limit-s", type=float, default=120.0, help="time bound per level (default: %(default)s)"
    )
    parser.add_argument("--update-fraction", type=float, default=0.01, help="share of documents added by the update")
    # One torch thread, as the server uses by default: the in-process figures compare like with like.
    parser.set_defaults(threads=1)
    args = parser.parse_args()
    bench = harness.start(NAME, args)

    from workbench.retrieval.corpus import load_corpus
    from workbench.retriever import Retriever

    corpus = load_corpus(bench.corpus_path)
    documents = list(corpus.documents.values())
    queries = list(corpus.judged_queries(SPLIT).values())
    held_back = max(1, round(len(documents) * args.update_fraction))
    work = Path(tempfile.mkdtemp(prefix="wb-bench-serve-", dir=bench.state_dir))
    cache_dir = bench.state_dir / "cache"

    import sentence_transformers  # noqa: F401  (so the first timed step does not pay for the import)

    started = time.perf_counter()
    full = Retriever.from_config(args.config, documents, cache_dir=cache_dir)
    full.save(work / "full")
    full_build_s = time.perf_counter() - started
    print(f"full build (cold, {len(documents)} docs, {full.info()['chunks']} chunks): {full_build_s:.1f} s")

    Retriever.from_config(args.config, documents[:-held_back], cache_dir=cache_dir).save(work / "updated")
    started = time.perf_counter()
    updated = Retriever.load(work / "updated")
    summary = updated.add(documents[-held_back:])
    updated.save(work / "updated")
    update_s = time.perf_counter() - started
    print(f"update (+{held_back} docs): {update_s:.1f} s ({summary})")
    same_after_update = [
        [h.doc_id for h in hits] for hits in Retriever.load(work / "updated").search_many(queries, K)
    ] == [[h.doc_id for h in hits] for hits in full.search_many(queries, K)]

    loaded = Retriever.load(work / "full")
    loaded.search(queries[0], k=K)  # first query pays for lazy initialisation
    single = []
    started = time.perf_counter()
    for query in queries:
        query_started = time.perf_counter()
        loaded.search(query, k=K)
        single.append((time.perf_counter() - query_started) * 1000)
    in_process_single = latency_figures(single, time.perf_counter() - started)
    started = time.perf_counter()
    in_process_answers = [[h.doc_id for h in hits] for hits in loaded.search_many(queries, K)]
    batch_s = time.perf_counter() - started
    in_process_batch = {"queries": len(queries), "qps": len(queries) / batch_s, "wall_s": batch_s}

    port = free_port()
    server = start_server(work / "full", port)
    http_levels = {}
    same_over_http = True
    try:
        drive(port, queries, 1, min(10, len(queries)), args.level_limit_s)  # warm-up, not counted
        for clients in args.clients:
            before = get_json(port, "/health")
            figures, answers = drive(port, queries, clients, args.requests, args.level_limit_s)
            after = get_json(port, "/health")
            batches = after["batches_answered"] - before["batches_answered"]
            figures["mean_batch"] = (after["queries_answered"] - before["queries_answered"]) / max(1, batches)
            http_levels[clients] = figures
            same_over_http &= all(answer == in_process_answers[n % len(queries)] for n, answer in answers.items())
            print(
                f"{clients:>2} clients: {figures['qps']:.1f} q/s, p50 {figures['p50_ms']:.1f} ms, "
                f"p95 {figures['p95_ms']:.1f} ms, mean batch {figures['mean_batch']:.1f}"
            )
    finally:
        server.terminate()
        server.wait(timeout=60)

    harness.print_table(
        f"{args.config.name} over {len(documents)} docs, {len(queries)} {SPLIT} queries, k = {K}",
        ["mode", "q/s", "p50 ms", "p95 ms"],
        [
            [
                "in-process search, one query at a time",
                in_process_single["qps"],
                in_process_single["p50_ms"],
                in_process_single["p95_ms"],
            ],
            ["in-process search_many, one batch", in_process_batch["qps"], None, None],
        ]
        + [[f"HTTP, {clients} clients", f["qps"], f["p50_ms"], f["p95_ms"]] for clients, f in http_levels.items()],
    )
    harness.print_table(
        "index build and update",
        ["step", "seconds"],
        [
            [f"full build, cold ({len(documents)} docs)", full_build_s],
            [f"update: add {held_back} docs ({args.update_fraction:.0%})", update_s],
        ],
    )
    figures = {
        "documents": len(documents),
        "chunks": full.info()["chunks"],
        "queries": len(queries),
        "k": K,
        "full_build_s": full_build_s,
        "update_added_docs": held_back,
        "update_s": update_s,
        "update_chunks_indexed": summary.chunks_indexed,
        "update_vs_full_build": update_s / full_build_s,
        "update_ranks_as_full_build": same_after_update,
        "in_process_single": in_process_single,
        "in_process_batch": in_process_batch,
        "http": {str(clients): figures for clients, figures in http_levels.items()},
        "http_answers_match_in_process": same_over_http,
    }
    bench.finish(figures, {"none fixed": "issue 14 asks for the figures"}, {"config": str(args.config)})


if __name__ == "__main__":
    main()
