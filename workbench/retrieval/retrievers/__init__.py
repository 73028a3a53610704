"""First-stage retrievers: each builds an index over chunks and answers a batch of queries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChunkHits:
    """Top chunks per query: ``indices[q]`` are positions in the chunk list, best first.

    Rows hold at most ``k`` entries, a chunk at most once; a row may be shorter when fewer chunks match.
    """

    indices: list[np.ndarray]
    scores: list[np.ndarray]
