"""What the synthesis tests share about the llama-cpp-python server they start (see conftest.py)."""

from __future__ import annotations

import socket

SERVED_NAME = "question-writer"  # the --model_alias the server answers to
API_KEY = "test-key-not-secret"
SERVER_START_S = 240  # loading the model under a busy neighbour; the poll ends as soon as it answers


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
