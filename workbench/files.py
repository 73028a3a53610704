"""Files written whole or not at all, file digests and inter-process locks."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # reading the umask means setting it; put it back at once


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> None:
    """Writes ``payload`` to ``path`` through a temp file in the same folder and a rename.

    A crash leaves either the old file or the new one, never half of one. Raises ``OSError``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    """Returns the hex sha256 of a whole file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_lock(path: Path):
    """Returns an inter-process lock (``filelock.FileLock``) on ``path``, creating its folder."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path)
