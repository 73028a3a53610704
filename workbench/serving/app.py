"""The HTTP service over a saved index: ``POST /search``, ``GET /health``, ``GET /info``; OpenAPI at ``/docs``.

Every bad request gets a 4xx answer whose ``error`` field says what to change in one line; an
unexpected failure inside a search answers 500 and the server keeps serving.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from workbench.errors import SearchError, WorkbenchError
from workbench.retriever import MAX_QUERY_CHARS, Retriever

MAX_BODY_BYTES = 4 * 1024 * 1024  # room for a long doc-id filter, not for a pasted corpus
MAX_FILTER_IDS = 100_000


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="The query text.")
    k: int = Field(default=10, ge=1, description="Documents to return, at most the config's output_depth.")
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
        if request.k > retriever.max_k:
            raise SearchError(f"k: must be at most {retriever.max_k} (the config's output_depth), got {request.k}")
        started = time.perf_counter()
        hits = await run_in_threadpool(retriever.search, request.query, request.k, request.doc_ids)
        return {
            "query": request.query,
            "k": request.k,
            "hits": [hit.to_dict() for hit in hits],
            "took_ms": (time.perf_counter() - started) * 1000,
        }

    @app.get("/health", response_model=HealthResponse, summary="Liveness and index size")
    async def health() -> dict[str, Any]:
        info = retriever.info()
        return {"status": "ok", "documents": info["documents"], "chunks": info["chunks"]}

    @app.get("/info", summary="Config, model fingerprints, provenance and held-out verdict of the index")
    async def info() -> dict[str, Any]:
        return {"index": str(index_path) if index_path is not None else None, **retriever.info()}

    return app


def jsonable(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Returns pydantic's error list without its non-JSON parts (exception objects in ``ctx``)."""
    return [
        {key: (str(value) if key == "ctx" else value) for key, value in error.items() if key in ("type", "loc", "msg", "ctx")}
        for error in errors
    ]


def serve(index_path: str | Path, host: str = "127.0.0.1", port: int = 8000, on_ready=print) -> None:
    """Loads the index at ``index_path`` and serves it until interrupted; raises ``SavedIndexError``."""
    import uvicorn

    retriever = Retriever.load(index_path)
    app = create_app(retriever, index_path)
    on_ready(f"serving {index_path} ({len(retriever)} documents) on http://{host}:{port}  (API docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
