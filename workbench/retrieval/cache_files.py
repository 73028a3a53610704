"""Where a cache's files live: a local folder (this machine's, or one every machine mounts), or an
fsspec URL (``s3://bucket/prefix``; ``memory://`` in tests). Both write each file whole: a rename
in a folder, one put in an object store.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Protocol

from workbench.errors import ConfigError, install_hint
from workbench.files import atomic_write_bytes, file_lock

LOCK_NAME = ".lock"


def is_url(location: str | Path) -> bool:
    """Returns whether a cache location is a URL for fsspec (``s3://…``, ``memory://…``) rather than a folder."""
    return isinstance(location, str) and "://" in location and not location.startswith("file://")


def local_folder(location: str | Path) -> Path:
    """Returns the folder a path or ``file://`` URL names."""
    text = str(location)
    return Path(text.removeprefix("file://")).expanduser()


class CacheFiles(Protocol):
    """The files of a cache location, by names relative to it (``embeddings/<model>/<role>/<shard>.json``)."""

    location: str

    def read(self, name: str) -> bytes | None:
        """Returns a file's bytes, or None when it does not exist."""
        ...

    def write(self, name: str, payload: bytes) -> None:
        """Writes a file whole: a reader sees the old bytes or the new ones, never a part."""
        ...

    def remove(self, name: str) -> None: ...

    def names(self, folder: str, suffix: str) -> list[str]:
        """Returns the sorted names of the files directly in ``folder`` that end with ``suffix``."""
        ...

    def lock(self, name: str) -> contextlib.AbstractContextManager:
        """Returns a lock held across the processes that share these files (where one exists)."""
        ...

    def local_path(self, name: str) -> Path | None:
        """Returns the file's path when it is on a local or mounted file system (memory-mapped then), else None."""
        ...

    def sizes(self) -> dict[str, tuple[int, int]]: ...

    def clear(self) -> None: ...


class LocalFiles:
    """A cache in a folder: this machine's, or one every machine mounts (NFS, a cluster file system)."""

    def __init__(self, root: Path):
        self.root = root
        self.location = str(root)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write(self, name: str, payload: bytes) -> None:
        atomic_write_bytes(self.root / name, payload)

    def remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def names(self, folder: str, suffix: str) -> list[str]:
        directory = self.root / folder
        if not directory.is_dir():
            return []
        return sorted(path.name for path in directory.iterdir() if path.name.endswith(suffix) and path.is_file())

    def lock(self, name: str):
        return file_lock(self.root / name)

    def local_path(self, name: str) -> Path | None:
        return self.root / name

    def sizes(self) -> dict[str, tuple[int, int]]:
        sizes: dict[str, tuple[int, int]] = {}
        if not self.root.is_dir():
            return sizes
        for kind_folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            files = [p for p in kind_folder.rglob("*") if p.is_file() and not p.name.endswith(LOCK_NAME)]
            sizes[kind_folder.name] = (len(files), sum(p.stat().st_size for p in files))
        return sizes

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class RemoteFiles:
    """A cache behind an fsspec URL (an object store such as ``s3://bucket/prefix``, or ``memory://``).

    An object store writes each object whole, so ``write`` is one put. There is no lock: see the module docstring.
    """

    def __init__(self, url: str):
        import fsspec

        check_cache_location(url)
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.location = url.rstrip("/")

    def _path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}" if name else self.root

    def read(self, name: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._path(name))
        except FileNotFoundError:
            return None

    def write(self, name: str, payload: bytes) -> None:
        self.fs.pipe_file(self._path(name), payload)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(name))

    def names(self, folder: str, suffix: str) -> list[str]:
        try:
            entries = self.fs.ls(self._path(folder), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(name for name in (entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries) if name.endswith(suffix))

    def lock(self, name: str):
        return contextlib.nullcontext()

    def local_path(self, name: str) -> Path | None:
        return None

    def sizes(self) -> dict[str, tuple[int, int]]:
        sizes: dict[str, tuple[int, int]] = {}
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            return sizes
        prefix = self.root.rstrip("/") + "/"
        for path, info in found.items():
            kind = path.removeprefix("/").removeprefix(prefix.removeprefix("/")).split("/", 1)[0]
            files, size = sizes.get(kind, (0, 0))
            sizes[kind] = (files + 1, size + int(info.get("size") or 0))
        return dict(sorted(sizes.items()))

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.root, recursive=True)


def check_cache_location(location: str) -> None:
    """Raises ``ConfigError`` when no file system serves a cache URL's scheme (``s3://`` without the s3 extra)."""
    if is_url(location):
        import fsspec

        scheme = location.split("://", 1)[0]
        try:
            fsspec.get_filesystem_class(scheme)
        except (ImportError, ValueError) as error:
            hint = f"; {install_hint('s3')}" if scheme in ("s3", "s3a") else ""
            raise ConfigError(f"cache {location}: no file system for '{scheme}://' ({error}){hint}") from None


def cache_files(location: str | Path) -> CacheFiles:
    """Returns the files of a cache location: a folder (or ``file://`` URL), or any other fsspec URL.

    Raises ``ConfigError`` when no file system serves the URL's scheme (``s3://`` without the s3 extra).
    """
    if is_url(location):
        return RemoteFiles(str(location))
    return LocalFiles(local_folder(location))
