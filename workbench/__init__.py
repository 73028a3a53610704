"""workbench: find the retrieval setup that works on your documents, and prove it.

The public API is the names in ``__all__``; every other module is internal and may change.
They are imported on first use, so ``workbench --help`` does not load the retrieval stack.
"""

__version__ = "0.1.0"
__all__ = ["Hit", "Retriever", "WorkbenchError", "__version__", "evaluate"]


def __getattr__(name: str):
    if name in ("Hit", "Retriever"):
        from workbench import retriever

        return getattr(retriever, name)
    if name == "evaluate":
        from workbench.evaluation.experiment import evaluate

        return evaluate
    if name == "WorkbenchError":
        from workbench.errors import WorkbenchError

        return WorkbenchError
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
