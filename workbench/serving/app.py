"""The HTTP service over a saved index: ``POST /search``, ``GET /health``, ``GET /info``, ``GET /openapi.json``.

Every bad request gets a 4xx answer whose ``error`` field says what to change in one line (an
unknown path and a wrong method too); an unexpected failure inside a search answers 500 and the
server keeps serving. A request body is counted as it arrives, whatever its transfer encoding,
and refused (413) once past ``MAX_BODY_BYTES``. With an API key, every path but ``/health`` asks
for it. There are no interactive docs (``/docs``): Swagger UI loads its scripts from a CDN.

Searches run one batch at a time: queries that arrive while a batch is being answered wait and
go together in the next one, so under concurrent load the encoder sees batches (much cheaper per
query than one call each) and a single search is never slowed by a queue of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path, PureWindowsPath
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from workbench.errors import SearchError, WorkbenchError
from workbench.retriever import DEFAULT_K, MAX_QUERY_CHARS, Hit, Query, Retriever
from workbench.serving.guards import ApiKeyGuard, BodyLimit
from workbench.serving.listener import bind, exposure_warning, listen

MAX_BODY_BYTES = 4 * 1024 * 1024  # room for a long doc-id filter, not for a pasted corpus
MAX_FILTER_IDS = 100_000
MAX_BATCH = 64  # queries answered by one pipeline call at most
ENDPOINTS = "POST /search, GET /health, GET /info, GET /openapi.json"


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
    # Strict, as config files are: `"k": true` or `"k": "5"` is a client's bug, not a 1 or a 5.
    model_config = ConfigDict(extra="forbid", strict=True)

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


def create_app(
    retriever: Retriever,
    index_path: str | Path | None = None,
    api_key: str | None = None,
    info_details: bool = False,
) -> FastAPI:
    """Returns the FastAPI application answering searches with ``retriever``.

    With ``api_key``, every request but ``GET /health`` must carry it (401 otherwise).
    ``info_details`` lets ``/info`` show absolute paths and the git commit; by default it shows
    names only (see ``public_info``).
    """
    batcher = QueryBatcher(retriever)
    app = FastAPI(
        title="workbench retriever",
        description="Search a document index with the retrieval pipeline a workbench study tuned.",
        version=__import__("workbench").__version__,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN: no good offline, nor wanted
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    if api_key is not None:
        app.add_middleware(ApiKeyGuard, api_key=api_key)  # added last, runs first: no key, no body read

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            message = f"no such path: {request.url.path}; this service answers {ENDPOINTS}"
        elif error.status_code == 405:
            allowed = (error.headers or {}).get("Allow", "")
            message = f"{request.method} {request.url.path}: method not allowed; use {allowed}"
        else:
            message = str(error.detail)
        response = _error(error.status_code, message, error.detail)
        response.headers.update(error.headers or {})
        return response

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
        # The exception's text may hold paths of this machine: callers get its type, the log gets the rest.
        return _error(500, f"internal error ({type(error).__name__}); the server's log has the details")

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
        if info_details:
            index = str(Path(index_path).resolve()) if index_path is not None else None
            return {"index": index, **retriever.info()}
        return {"index": Path(index_path).name if index_path is not None else None, **public_info(retriever.info())}

    return app


def public_info(info: Any) -> Any:
    """Returns ``info`` with every absolute path cut to its last name and the git commit dropped from versions.

    What `/info` shows any caller by default: the folders of the machine serving and the commit of
    its checkout are the operator's to disclose (``--info-details``). Model ids such as
    ``sentence-transformers/all-MiniLM-L6-v2`` and relative paths are kept.
    """
    if isinstance(info, dict):
        return {
            key: _release(value) if key == "code_version" and isinstance(value, str) else public_info(value)
            for key, value in info.items()
        }
    if isinstance(info, list | tuple):
        return [public_info(value) for value in info]
    if isinstance(info, str) and _is_absolute_path(info):
        return PureWindowsPath(info).name  # splits on "/" and "\\" alike, whichever machine wrote the path
    return info


def _release(code_version: str) -> str:
    return code_version.split("+", 1)[0]  # "0.4.0+3f2a9c1" → "0.4.0"


def _is_absolute_path(text: str) -> bool:
    return text.startswith(("/", "~", "\\")) or (len(text) > 2 and text[1] == ":" and text[2] in "/\\")


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


def serve(
    index_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int = 1,
    say: Callable[[str], None] = print,
    api_key: str | None = None,
    info_details: bool = False,
) -> None:
    """Serves the index at ``index_path`` until interrupted; raises ``SavedIndexError`` or ``ServiceError``.

    The port is bound before the index is loaded (a port in use fails at once) and listens before
    ``say`` is told "serving … on http://HOST:PORT", so that line is a promise a client can act
    on. ``say`` also gets a warning line when the service is reachable beyond this machine
    without an API key.

    ``threads`` is torch's thread count for encoding queries (and re-ranking). One is the default:
    a single query gains nothing from more, and when other processes share the cores, two threads
    made a query ~10x slower here (1.1 s against 87 ms); concurrent load is absorbed by batching.
    """
    listener = bind(host, port)
    try:
        warning = exposure_warning(listener.getsockname()[0], host, api_key)
        if warning is not None:
            say(warning)
        import torch
        import uvicorn

        torch.set_num_threads(threads)
        retriever = Retriever.load(index_path)
        app = create_app(retriever, index_path, api_key=api_key, info_details=info_details)
        listen(listener, host, port)
        bound_port = listener.getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        url = f"http://{url_host}:{bound_port}"
        say(f"serving {index_path} ({len(retriever)} documents) on {url}  (schema: /openapi.json)")
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])
    finally:
        listener.close()
