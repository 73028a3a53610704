"""One pipeline scored on one split: ``workbench.evaluate``, what ``workbench evaluate`` prints.

    import workbench

    result = workbench.evaluate("best.toml", "corpora/adi", split="test", metrics=("nDCG@10", "Recall@100"))
    result.means["nDCG@10"]             # mean over the split's judged queries
    result.per_query["nDCG@10"]["7"]    # one query's score
    result.run["7"]                     # doc id → score, the pipeline's ranking
    result.latency.p95_ms, result.index_build_seconds

A ``Retriever`` (built or loaded from an index folder) is scored the same way; the corpus then
gives only the queries and qrels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError
from workbench.evaluation.latency import Latency, time_queries
from workbench.evaluation.metrics import DEFAULT_METRICS, Evaluation, parse_metric
from workbench.evaluation.metrics import evaluate as evaluate_run
from workbench.progress import ProgressCallback
from workbench.retrieval.cache import Cache
from workbench.retrieval.config import PipelineConfig, load_pipeline_config
from workbench.retrieval.corpus import Corpus, load_corpus
from workbench.retrieval.pipeline import Pipeline, Resources
from workbench.retriever import Retriever
from workbench.types import PerQueryScores, Run


@dataclass(frozen=True)
class EvaluationResult:
    """A pipeline's scores on one split, its run, and how fast it answered."""

    pipeline: str  # the config's name
    split: str
    evaluation: Evaluation  # per query and means, by canonical metric name
    run: Run  # query id → doc id → score, ``output_depth`` deep
    latency: Latency  # single queries, one thread, nothing cached
    index_build_seconds: float  # building the indexes for this evaluation (0 for a Retriever, built before)

    @property
    def means(self) -> dict[str, float]:
        """Canonical metric name → mean over the split's judged queries."""
        return self.evaluation.means

    @property
    def per_query(self) -> PerQueryScores:
        """Canonical metric name → query id → score."""
        return self.evaluation.per_query

    @property
    def num_queries(self) -> int:
        """The split's judged queries: the denominator of every mean."""
        return self.evaluation.num_queries

    def to_dict(self) -> dict[str, Any]:
        """Returns the figures as JSON-ready data (the run and per-query scores left out)."""
        return {
            "split": self.split,
            "num_queries": self.num_queries,
            "metrics": self.means,
            "latency": self.latency.to_dict(),
            "index_build_seconds": self.index_build_seconds,
        }


def evaluate(
    pipeline: str | Path | PipelineConfig | Retriever,
    corpus: str | Path | Corpus,
    split: str = "test",
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    cache_dir: str | Path | None = None,
    latency_sample: int = 50,
    progress: ProgressCallback | None = None,
) -> EvaluationResult:
    """Runs ``pipeline`` (a config file, a ``PipelineConfig`` or a ``Retriever``) over the judged
    queries of ``split`` in ``corpus`` (a folder or a ``Corpus``) and scores it on ``metrics``.

    A config is built over the corpus's documents (with ``cache_dir``, a state folder's ``cache/``,
    chunks, tokens and vectors computed before are reused). The first ``latency_sample`` queries
    are then timed one at a time. Returns an ``EvaluationResult``. Every input is checked before
    an index is built: raises ``ConfigError`` (an unknown metric, a bad config), ``CorpusError``
    (a bad corpus, an unknown split) or ``ModelError``.
    """
    metric_names = tuple(parse_metric(name).name for name in ((metrics,) if isinstance(metrics, str) else metrics))
    if not metric_names:
        raise ConfigError(f"no metrics to evaluate; name at least one, e.g. {DEFAULT_METRICS}")
    loaded = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    if isinstance(pipeline, (str, Path)):
        pipeline = load_pipeline_config(pipeline)
    queries = loaded.judged_queries(split)
    qrels = loaded.split_qrels(split)
    if isinstance(pipeline, Retriever):
        run = pipeline.run(queries)
        scores = evaluate_run(run, qrels, metric_names)
        latency = time_queries(pipeline.run, queries, latency_sample)  # a retriever caches no query
        return EvaluationResult(pipeline.config.name, split, scores, run, latency, 0.0)
    resources = Resources(loaded, Cache(cache_dir) if cache_dir is not None else None, progress)
    run = Pipeline(pipeline, resources).search(queries).run
    scores = evaluate_run(run, qrels, metric_names)
    cold = Pipeline(pipeline, resources, query_cache=False)  # the indexes just built; queries encoded afresh
    latency = time_queries(cold.search, queries, latency_sample)
    return EvaluationResult(pipeline.name, split, scores, run, latency, sum(resources.build_seconds.values()))
