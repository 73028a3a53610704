"""The MLflow UI over a study store, bound to loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def dashboard_command(tracking_uri: str, artifact_root: Path, port: int) -> list[str]:
    """Returns the command line that serves the MLflow UI for ``tracking_uri`` on 127.0.0.1:``port``."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--default-artifact-root",
        artifact_root.resolve().as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def serve_dashboard(tracking_uri: str, artifact_root: Path, port: int, say: Callable[[str], None]) -> None:
    """Runs the MLflow UI in the foreground until Ctrl-C or SIGTERM, then stops the whole server."""
    say(f"MLflow dashboard for {tracking_uri}")
    say(f"open http://127.0.0.1:{port} (Ctrl-C to stop)")
    # Its own session, so stopping it also stops the workers the MLflow server starts.
    process = subprocess.Popen(
        dashboard_command(tracking_uri, artifact_root, port), env=os.environ.copy(), start_new_session=True
    )
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        process.wait()
    except KeyboardInterrupt:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    finally:
        signal.signal(signal.SIGTERM, previous)
