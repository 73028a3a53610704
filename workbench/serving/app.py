"""The HTTP service over a saved index: ``POST /search``, ``GET /health``, ``GET /info``; OpenAPI at ``/docs``.

Every bad request gets a 4xx answer whose ``error`` field says what to change in one line; an
unexpected failure inside a search answers 500 and the server keeps serving.

Searches run one batch at a time: queries that arrive while a batch is being answered wait and
go together in the next one, so under concurrent load the encoder sees batches (much cheaper per
query than one call each) and a single search is never slowed by a queue of its own.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from workbench.errors import SearchError, WorkbenchError
from workbench.retriever import DEFAULT_K, MAX_QUERY_CHARS, Hit, Query, Retriever

MAX_BODY_BYTES = 4 * 1024 * 1024  # room for a long doc-id filter, not for a pasted corpus
MAX_FILTER_IDS = 100_000
MAX_BATCH = 64  # queries answered by one pipeline call at most


class QueryBatcher:
    """Answers searches in batches, one batch at a time, from the event loop's thread.

    A query waits only while the batch before it runs; every query waiting then goes in the next
    batch (up to ``max_batch``). A failure inside a batch fails that batch's requests only.
    """

    def __init__(self, retriever: Retriever, max_batch: int = MAX_BATCH):
        self.retriever = retriever
        self.max_batch = max_batch
        self._pending: list[tuple[Query, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self.batches = 0  # batches and queries answered so far, reported by /health
        self.queries = 0

    async def search(self, query: Query) -> list[Hit]:
        """Returns the hits of ``query``; raises ``SearchError`` at once for a query that cannot be answered."""
        self.retriever.check(query)  # a bad query must not fail the batch it would have joined
        future = asyncio.get_running_loop().create_future()
        self._pending.append((query, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            batch = [(query, future) for query, future in batch if not future.done()]  # clients that gave up
            if not batch:
                continue
            try:
                results = await run_in_threadpool(self.retriever.search_queries, [query for query, _ in batch])
            except Exception as error:  # noqa: BLE001  (each waiting request answers 4xx/500 with it)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches += 1
            self.queries += len(batch)
            for (_, future), hits in zip(batch, results):
                if not future.done():
                    future.set_result(hits)


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="The query text.")
    k: int | None = Field(
        default=None, ge=1, description="Documents to return: at most the config's output_depth; default 10 (or fewer)."
    )
    doc_ids: list[str] | None = Field(
        default=None,
        max_length=MAX_FILTER_IDS,
        description="Keep only these documents (among the pipeline's ranking); ids not in the index match nothing.",
    )


class HitOut(BaseModel):
    rank: int
    doc_id: str
    score: float
    title: str
    text: str
    chunk_id: str = Field(description="The best-matching chunk: the one that gave the document its first-stage score.")
    chunk_text: str


class SearchResponse(BaseModel):
    query: str
    k: int
    hits: list[HitOut]
    took_ms: float


class HealthResponse(BaseModel):
    status: str
    documents: int
    chunks: int
    queries_answered: int
    batches_answered: int = Field(description="Pipeline calls that answered them; fewer under concurrent load.")


def _error(status: int, message: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(status_code=status, content=body)


def _validation_message(errors: list[dict[str, Any]]) -> tuple[int, str]:
    if any(error.get("type") == "json_invalid" for error in errors):
        context = next(error.get("ctx", {}) for error in errors if error.get("type") == "json_invalid")
        return 400, f"malformed JSON body: {context.get('error', 'cannot be parsed')}"
    parts = []
    for error in errors[:5]:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return 422, "; ".join(parts)


def create_app(retriever: Retriever, index_path: str | Path | None = None) -> FastAPI:
    """Returns the FastAPI application answering searches with ``retriever``."""
    batcher = QueryBatcher(retriever)
    app = FastAPI(
        title="workbench retriever",
        description="Search a document index with the retrieval pipeline a workbench study tuned.",
        version=__import__("workbench").__version__,
    )

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            return _error(413, f"request body over {MAX_BODY_BYTES} bytes")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(list(error.errors()))
        return _error(status, message, jsonable(error.errors()))

    @app.exception_handler(SearchError)
    async def bad_search(request: Request, error: SearchError) -> JSONResponse:
        return _error(422, str(error))

    @app.exception_handler(WorkbenchError)
    async def workbench_error(request: Request, error: WorkbenchError) -> JSONResponse:
        return _error(400, str(error))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(error).__name__}: {error}")

    @app.post("/search", response_model=SearchResponse, summary="Search the index")
    async def search(request: SearchRequest) -> dict[str, Any]:
        k = min(DEFAULT_K, retriever.max_k) if request.k is None else request.k
        if k > retriever.max_k:
            raise SearchError(f"k: must be at most {retriever.max_k} (the config's output_depth), got {k}")
        started = time.perf_counter()
        doc_ids = frozenset(request.doc_ids) if request.doc_ids is not None else None
        hits = await batcher.search(Query(request.query, k, doc_ids))
        return {
            "query": request.query,
            "k": k,
            "hits": [hit.to_dict() for hit in hits],
            "took_ms": (time.perf_counter() - started) * 1000,
        }

    @app.get("/health", response_model=HealthResponse, summary="Liveness and index size")
    async def health() -> dict[str, Any]:
        info = retriever.info()
        return {
            "status": "ok",
            "documents": info["documents"],
            "chunks": info["chunks"],
            "queries_answered": batcher.queries,
            "batches_answered": batcher.batches,
        }

    @app.get("/info", summary="Config, model fingerprints, provenance and held-out verdict of the index")
    async def info() -> dict[str, Any]:
        return {"index": str(index_path) if index_path is not None else None, **retriever.info()}

    return app


def jsonable(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Returns pydantic's error list without its non-JSON parts (exception objects in ``ctx``)."""
    return [
        {
            key: (str(value) if key == "ctx" else value)
            for key, value in error.items()
            if key in ("type", "loc", "msg", "ctx")
        }
        for error in errors
    ]


def serve(index_path: str | Path, host: str = "127.0.0.1", port: int = 8000, threads: int = 1, on_ready=print) -> None:
    """Loads the index at ``index_path`` and serves it until interrupted; raises ``SavedIndexError``.

    ``threads`` is torch's thread count for encoding queries (and re-ranking). One is the default:
    a single query gains nothing from more, and when other processes share the cores, two threads
    made a query ~10x slower here (1.1 s against 87 ms); concurrent load is absorbed by batching.
    """
    import torch
    import uvicorn

    torch.set_num_threads(threads)
    retriever = Retriever.load(index_path)
    app = create_app(retriever, index_path)
    on_ready(f"serving {index_path} ({len(retriever)} documents) on http://{host}:{port}  (API docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
