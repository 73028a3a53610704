"""The shared currency of workbench: plain data, no behaviour.

A ``Run`` maps query id → doc (or chunk) id → score, higher is better.
``Qrels`` maps query id → doc id → graded relevance (0 = judged not relevant).
"""

from __future__ import annotations

from dataclasses import dataclass

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]
PerQueryScores = dict[str, dict[str, float]]  # metric name → query id → score


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """Title and body as one string, the BEIR convention for indexing."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    text: str


@dataclass(frozen=True)
class QuerySet:
    """Judged queries (query id → text) with their qrels: one side of a tuning/held-out split."""

    name: str
    queries: dict[str, str]
    qrels: Qrels
