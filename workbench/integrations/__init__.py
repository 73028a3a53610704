"""Adapters that let other frameworks use a workbench ``Retriever`` (optional extras)."""
