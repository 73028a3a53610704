"""Files written whole or not at all, file digests, inter-process locks, and the checks on what workbench writes."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

from workbench.errors import OutputError

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


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Lets ``write(temp_path)`` write a file beside ``path``, then renames it to ``path``.

    For writers that want a file name (plotly's ``write_html``). A failure removes the temp file,
    so ``path`` keeps its old content or stays absent. Raises what ``write`` raises, or ``OSError``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        os.chmod(temp_name, 0o666 & ~_UMASK)
        write(Path(temp_name))
        with open(temp_name, "rb") as handle:
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


def process_label(pid: int | None = None) -> str:
    """Returns ``host:pid`` for a process of this machine (default: this one)."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def dead_local_process(label: str) -> bool:
    """Returns True when ``label`` (``host:pid``) names a process of this machine that no longer exists."""
    host, _, pid = label.strip().rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def writable_folder(path: Path, what: str) -> Path:
    """Returns ``path`` after making sure it is a folder this process can write, creating it if missing.

    Raises ``OutputError`` naming ``what`` and the path when it is a file, or cannot be created or written.
    """
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # os.access would say yes to root on a read-only file system; a real write says no.
        with tempfile.TemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as error:
        raise OutputError(f"{what} {path} cannot be written: {error.strerror or error}") from None
    return path


def check_output_file(path: Path, overwrite: bool, protected: Iterable[Path] = ()) -> None:
    """Checks, before any work, that ``path`` can take a new file.

    Raises ``OutputError`` when ``path`` is a folder, is one of ``protected`` (the inputs of the
    command), lies under a file, or exists while ``overwrite`` is False.
    """
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name, e.g. {path / 'best.toml'}")
    for kept in protected:
        if path.exists() and kept.exists() and path.samefile(kept):
            raise OutputError(f"{path} is one of this command's inputs ({kept}); write to another file")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --force to replace it")
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {path}: {ancestor} is a file, not a folder")


def check_new_folder(out: Path) -> None:
    """Raises ``OutputError`` unless ``out`` is absent or an empty folder: a command that writes a
    folder never writes over one."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"{out}: already exists and is not an empty folder; choose another --out or remove it")


@contextmanager
def building_folder(out: Path):
    """Yields a fresh folder next to ``out`` to build in, renamed to ``out`` when the block ends
    without error and removed when it fails, so ``out`` is either complete or absent."""
    check_new_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield building
        os.chmod(building, 0o777 & ~_UMASK)  # mkdtemp makes 0700; the finished folder is not private
        if out.exists():
            check_new_folder(out)  # something may have appeared there while this built
            out.rmdir()
        os.rename(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
