"""Retrieval metrics over a Run and Qrels, computed by pytrec_eval with trec_eval semantics.

Semantics, the same as ``trec_eval -c -l 1``:

* nDCG uses linear gains (the grade itself) and a log2 discount; the ideal ranking comes from
  the qrels.
* Binary metrics (Recall, P, MRR, MAP) count a document as relevant when its grade is >= 1.
* A ranking is ordered by score descending, and equal scores by doc id *descending*
  (trec_eval compares doc ids with ``strcmp``), whatever order the Run dict holds them in.
* Means are over the judged queries: those in the qrels with at least one grade > 0. A judged
  query missing from the run, or with an empty ranking, scores 0 on every metric; run queries
  that are not judged are ignored.

Run files are read and written in TREC format: ``qid Q0 docid rank score tag``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import ConfigError, CorpusError
from workbench.files import atomic_write_bytes
from workbench.retrieval.fusion import ranked, top_k
from workbench.types import PerQueryScores, Qrels, Run

DEFAULT_METRICS: tuple[str, ...] = ("nDCG@10", "Recall@100", "MRR@10", "MAP", "P@10")

RELEVANCE_LEVEL = 1

_DISPLAY = {"ndcg": "nDCG", "recall": "Recall", "mrr": "MRR", "map": "MAP", "precision": "P"}

# Per family, the trec_eval measure for (a ranking cut at k, the whole ranking).
_TREC_MEASURE = {
    "ndcg": ("ndcg_cut", "ndcg"),
    "recall": ("recall", "set_recall"),
    "precision": ("P", "set_P"),
    "map": ("map_cut", "map"),
    "mrr": ("recip_rank", "recip_rank"),
}

_ALIASES = {
    "ndcg": "ndcg",
    "ndcg_cut": "ndcg",
    "recall": "recall",
    "r": "recall",
    "mrr": "mrr",
    "rr": "mrr",
    "recip_rank": "mrr",
    "map": "map",
    "ap": "map",
    "map_cut": "map",
    "p": "precision",
    "precision": "precision",
}

_METRIC_PATTERN = re.compile(r"^([a-z_]+?)(?:[@._](\d+))?$")

_ACCEPTED_FORMS = (
    "nDCG@k, Recall@k (or R@k), MRR@k, MAP, MAP@k, P@k (or precision@k), "
    "or nDCG, Recall, MRR, P with no cutoff for the whole ranking; "
    "case-insensitive, k a positive integer, e.g. 'nDCG@10'"
)


@dataclass(frozen=True)
class Metric:
    """One retrieval metric: ``name`` is its canonical display form, e.g. ``nDCG@10``."""

    name: str
    family: str  # "ndcg" | "recall" | "mrr" | "map" | "precision"
    cutoff: int | None

    def __post_init__(self) -> None:
        if self.family not in _DISPLAY:
            raise ConfigError(f"metric family {self.family!r} is unknown; use one of {sorted(_DISPLAY)}")
        if self.cutoff is not None and (
            isinstance(self.cutoff, bool) or not isinstance(self.cutoff, int) or self.cutoff < 1
        ):
            raise ConfigError(f"metric {self.name!r}: cutoff must be a positive integer or None, got {self.cutoff!r}")
        canonical = _canonical_name(self.family, self.cutoff)
        if self.name != canonical:
            raise ConfigError(
                f"metric name {self.name!r} does not match family {self.family!r} and cutoff "
                f"{self.cutoff!r}; its canonical name is {canonical!r} (use parse_metric)"
            )

    @property
    def tracking_name(self) -> str:
        """The name as MLflow and file names can hold it, e.g. ``ndcg_at_10``, ``map``."""
        return self.name.lower().replace("@", "_at_")

    @property
    def _trec_measure(self) -> str:
        with_cutoff, whole_ranking = _TREC_MEASURE[self.family]
        # recip_rank takes no cutoff in trec_eval: MRR@k is computed on a truncated run.
        if self.cutoff is None or self.family == "mrr":
            return whole_ranking
        return f"{with_cutoff}.{self.cutoff}"

    @property
    def _trec_result_key(self) -> str:
        return self._trec_measure.replace(".", "_")


@dataclass(frozen=True)
class Evaluation:
    """Scores of one run: per query, and means over the judged queries."""

    per_query: PerQueryScores  # canonical metric name → query id → score
    means: dict[str, float]  # canonical metric name → mean over judged queries
    num_queries: int  # judged queries, the denominator of every mean


def _canonical_name(family: str, cutoff: int | None) -> str:
    display = _DISPLAY[family]
    return display if cutoff is None else f"{display}@{cutoff}"


def parse_metric(name: str) -> Metric:
    """Parse a metric name such as ``ndcg@10``, ``R@100``, ``MRR`` or ``precision@5``.

    Returns the Metric with its canonical name (``nDCG@10``, ``Recall@100``, ``MRR``, ``P@5``).
    Raises ConfigError naming the bad metric and listing the accepted forms.
    """
    match = _METRIC_PATTERN.match(name.strip().lower()) if isinstance(name, str) else None
    family = _ALIASES.get(match.group(1)) if match else None
    cutoff = int(match.group(2)) if match and match.group(2) is not None else None
    if match is None or family is None or cutoff == 0:
        raise ConfigError(f"unknown metric {name!r}; accepted forms: {_ACCEPTED_FORMS}")
    return Metric(_canonical_name(family, cutoff), family, cutoff)


def _unique_metrics(metrics: Iterable[str | Metric]) -> list[Metric]:
    parsed = [metric if isinstance(metric, Metric) else parse_metric(metric) for metric in metrics]
    return list(dict.fromkeys(parsed))


def _with_float_scores(run: Run) -> Run:
    return {query_id: {doc_id: float(score) for doc_id, score in ranking.items()} for query_id, ranking in run.items()}


def evaluate(run: Run, qrels: Qrels, metrics: Sequence[str | Metric] = DEFAULT_METRICS) -> Evaluation:
    """Score ``run`` against ``qrels`` on ``metrics`` (names or Metric objects).

    Returns an Evaluation keyed by canonical metric names; every judged query has a score
    for every metric. Raises ConfigError for an unknown metric or an empty metric list, and
    CorpusError when no query in ``qrels`` has a grade > 0 (there is nothing to average).
    """
    import pytrec_eval

    wanted = _unique_metrics(metrics)
    if not wanted:
        raise ConfigError(f"no metrics to evaluate; name at least one, e.g. {DEFAULT_METRICS}")
    judged_qrels = {
        query_id: grades
        for query_id, grades in qrels.items()
        if any(grade >= RELEVANCE_LEVEL for grade in grades.values())
    }
    if not judged_qrels:
        raise CorpusError(
            "the qrels hold no query with a relevance grade > 0, so there is nothing to "
            "average over; check that the qrels file is the right one and its grades are set"
        )
    judged_run = {query_id: ranking for query_id in judged_qrels if (ranking := run.get(query_id))}

    # One pytrec_eval pass for every metric on the full ranking, plus one per distinct MRR
    # cutoff, because recip_rank has no cutoff of its own.
    passes: list[tuple[list[Metric], Run]] = []
    full_ranking_metrics = [m for m in wanted if not (m.family == "mrr" and m.cutoff)]
    if full_ranking_metrics:
        passes.append((full_ranking_metrics, judged_run))
    for cutoff in sorted({m.cutoff for m in wanted if m.family == "mrr" and m.cutoff}):
        mrr_metrics = [m for m in wanted if m.family == "mrr" and m.cutoff == cutoff]
        passes.append((mrr_metrics, top_k(judged_run, cutoff)))

    per_query = {metric.name: dict.fromkeys(judged_qrels, 0.0) for metric in wanted}
    for pass_metrics, pass_run in passes:
        evaluator = pytrec_eval.RelevanceEvaluator(
            judged_qrels,
            {metric._trec_measure for metric in pass_metrics},
            relevance_level=RELEVANCE_LEVEL,
        )
        try:
            results = evaluator.evaluate(pass_run)
        except TypeError:
            # pytrec_eval takes only Python floats and ints as scores (numpy float32 raises);
            # copying every score up front would cost more than the evaluation itself.
            results = evaluator.evaluate(_with_float_scores(pass_run))
        for query_id, values in results.items():
            for metric in pass_metrics:
                per_query[metric.name][query_id] = values[metric._trec_result_key]

    means = {name: math.fsum(scores.values()) / len(judged_qrels) for name, scores in per_query.items()}
    return Evaluation(per_query=per_query, means=means, num_queries=len(judged_qrels))


def _check_token(value: str, what: str) -> None:
    if not value or any(char.isspace() for char in value):
        raise CorpusError(
            f"{what} {value!r} is empty or holds whitespace, which a TREC run file cannot "
            f"represent; use ids without spaces"
        )


def write_trec_run(run: Run, path: str | os.PathLike[str], tag: str) -> None:
    """Write ``run`` to ``path`` as a TREC run file, ``qid Q0 docid rank score tag`` per line.

    Queries appear in sorted id order; ranks start at 1 and follow trec_eval's order (score
    desc, then doc id desc), so trec_eval reads back exactly these ranks. Scores are written
    with ``repr`` so they read back bit-for-bit. The file is replaced atomically. Returns None.
    Raises ConfigError for an empty tag or one with whitespace, and CorpusError for ids a
    TREC file cannot hold or when the file cannot be written.
    """
    if not tag or any(char.isspace() for char in tag):
        raise ConfigError(f"run tag {tag!r} must be non-empty and hold no whitespace")
    lines = []
    for query_id in sorted(run):
        _check_token(query_id, "query id")
        for rank, (doc_id, score) in enumerate(ranked(run[query_id]), start=1):
            _check_token(doc_id, f"query {query_id!r}: doc id")
            lines.append(f"{query_id} Q0 {doc_id} {rank} {float(score)!r} {tag}\n")

    if not Path(path).parent.is_dir():
        raise CorpusError(f"cannot write run file {path}: no folder {Path(path).parent}")
    try:
        atomic_write_bytes(path, "".join(lines).encode("utf-8"))
    except OSError as error:
        raise CorpusError(f"cannot write run file {path}: {error}") from error


def read_trec_run(path: str | os.PathLike[str]) -> Run:
    """Read a TREC run file (``qid Q0 docid rank score tag`` per line) into a Run.

    Ranks and tags are ignored: scores alone order a Run. Blank lines are skipped.
    Returns query id → doc id → score. Raises CorpusError when the file cannot be read, a
    line does not have six fields, a score is not a number, or a doc repeats within a query.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CorpusError(f"cannot read run file {source}: {error}") from error

    run: Run = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise CorpusError(
                f"{source} line {line_number}: expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}"
            )
        query_id, _, doc_id, _, score_text, _ = fields
        try:
            score = float(score_text)
        except ValueError:
            raise CorpusError(f"{source} line {line_number}: score {score_text!r} is not a number") from None
        ranking = run.setdefault(query_id, {})
        if doc_id in ranking:
            raise CorpusError(f"{source} line {line_number}: doc {doc_id!r} appears twice for query {query_id!r}")
        ranking[doc_id] = score
    return run
