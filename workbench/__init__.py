"""workbench: find the retrieval setup that works on your documents, and prove it."""

__version__ = "0.1.0"
