"""Fixtures of the synthesis tests: the bundled GGUF loaded once, and llama-cpp-python's own
OpenAI-compatible server on it, started on 127.0.0.1 and stopped at the end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from extras import require_extra
from llama_server import API_KEY, SERVED_NAME, SERVER_START_S, free_port


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """The bundled Gemma 3 270M GGUF (assembled from its part packages on first use)."""
    from workbench.synthesis.generators import bundled_model_path

    require_extra("synth")

    return bundled_model_path()


@pytest.fixture(scope="session")
def llama_generator(gguf_path):
    """The bundled model loaded in this process by llama-cpp-python."""
    from workbench.synthesis.generators import LlamaCppGenerator

    return LlamaCppGenerator(gguf_path)


@pytest.fixture(scope="session")
def server(gguf_path, tmp_path_factory):
    """``python -m llama_cpp.server`` on the bundled GGUF, behind an API key; yields its base URL and log."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf_path), "--model_alias", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--api_key", API_KEY,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            request = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {API_KEY}"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    json.loads(response.read())
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"llama_cpp.server did not answer within {SERVER_START_S} s: {log_path.read_text()[-2000:]}"
                    )
                time.sleep(0.5)
        yield SimpleNamespace(url=url, port=port, log=log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
