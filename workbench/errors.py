"""Errors a user can act on. The CLI prints them as one line and exits with the error's ``exit_code``:
2 for bad input (the default), 1 for a fault of the environment (``EnvironmentFault``)."""


def install_hint(extra: str) -> str:
    """The command that installs an optional extra, for the message of an error about a missing one."""
    return f"install it with `scripts/setup {extra}` in the workbench checkout (pip install -e '.[{extra}]')"


class WorkbenchError(Exception):
    """Base class of every error workbench raises on purpose."""

    exit_code = 2


class ConfigError(WorkbenchError):
    """A pipeline or study config is malformed or out of range."""


class CorpusError(WorkbenchError):
    """A corpus folder, queries file or qrels file cannot be used."""


class ModelError(WorkbenchError):
    """A model named in a config cannot be found or loaded; ``model`` is the id or folder as named."""

    def __init__(self, message: str, model: str | None = None):
        super().__init__(message)
        self.model = model


class CacheError(WorkbenchError):
    """A cache entry cannot be written or read."""


class StudyError(WorkbenchError):
    """A study cannot be run, resumed or exported."""


class OutputError(WorkbenchError):
    """A file or folder workbench must write (state folder, ``--out``) cannot be used."""


class SavedIndexError(WorkbenchError):
    """A saved index is missing, damaged, or was built with other models than the ones found now."""


class SearchError(WorkbenchError):
    """A search request cannot be answered as asked (empty query, k out of range)."""


class ServiceError(WorkbenchError):
    """``workbench serve`` cannot start as asked (a port in use, an API key variable that is not set)."""


class EnvironmentFault(WorkbenchError):
    """Something outside the user's input failed: a server that does not answer, a full disk. Exit code 1."""

    exit_code = 1
