"""Tests for workbench/evaluation.py: oracles (pytrec_eval direct, textbook Python), hand-checked
values, trec_eval's tie order, judged-query averaging, metric names, run-file round trip."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from workbench.errors import ConfigError, CorpusError
from workbench.evaluation.metrics import (
    DEFAULT_METRICS,
    Evaluation,
    Metric,
    evaluate,
    parse_metric,
    read_trec_run,
    write_trec_run,
)
from workbench.types import Qrels, Run

ADI = Path(__file__).resolve().parents[2] / "corpora" / "adi"

ORACLE_METRICS = (
    "nDCG@10",
    "nDCG@3",
    "Recall@100",
    "Recall@10",
    "MRR@10",
    "MRR@3",
    "MRR",
    "MAP",
    "P@10",
    "P@5",
)


# --- a textbook implementation, written from the definitions, sharing no code with the module ---


def trec_order(ranking: dict[str, float]) -> list[str]:
    """Doc ids by score desc; equal scores by doc id desc, as trec_eval's strcmp sort does."""
    by_doc_id_desc = sorted(ranking, reverse=True)
    return sorted(by_doc_id_desc, key=lambda doc_id: -ranking[doc_id])  # stable sort


def textbook_score(metric: str, ranking: dict[str, float], grades: dict[str, int]) -> float:
    family, _, cutoff_text = metric.partition("@")
    order = trec_order(ranking)
    top = order[: int(cutoff_text)] if cutoff_text else order
    relevant = {doc_id for doc_id, grade in grades.items() if grade >= 1}
    if family == "nDCG":
        # Linear gain, log2(rank + 1) discount; the ideal ranking sorts all judged grades.
        dcg = sum(max(grades.get(d, 0), 0) / math.log2(rank + 1) for rank, d in enumerate(top, 1))
        ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[: int(cutoff_text)]
        idcg = sum(gain / math.log2(rank + 1) for rank, gain in enumerate(ideal, 1))
        return dcg / idcg if idcg else 0.0
    if family == "Recall":
        return len(relevant.intersection(top)) / len(relevant)
    if family == "P":
        return len(relevant.intersection(top)) / int(cutoff_text)
    if family == "MRR":
        return next((1.0 / rank for rank, d in enumerate(top, 1) if d in relevant), 0.0)
    if family == "MAP":
        hits, precision_sum = 0, 0.0
        for rank, doc_id in enumerate(order, 1):
            if doc_id in relevant:
                hits += 1
                precision_sum += hits / rank
        return precision_sum / len(relevant)
    raise AssertionError(f"textbook has no {metric}")


def pytrec_eval_direct(metric: str, run: Run, qrels: Qrels) -> dict[str, float]:
    """The metric straight from pytrec_eval; MRR@k on a run truncated in trec_eval's order."""
    import pytrec_eval

    family, _, cutoff = metric.partition("@")
    if family == "MRR" and cutoff:
        run = {q: {d: run[q][d] for d in trec_order(run[q])[: int(cutoff)]} for q in run}
    measure = {
        "nDCG": f"ndcg_cut.{cutoff}",
        "Recall": f"recall.{cutoff}",
        "P": f"P.{cutoff}",
        "MRR": "recip_rank",
        "MAP": "map",
    }[family]
    results = pytrec_eval.RelevanceEvaluator(qrels, {measure}, relevance_level=1).evaluate(run)
    return {query_id: values[measure.replace(".", "_")] for query_id, values in results.items()}


# --- the oracle test on a real corpus ---


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def adi_bm25() -> tuple[Run, Qrels]:
    """A BM25 run (top 100, capped at the 82 docs) over ADI's queries, built with bm25s."""
    import bm25s

    docs = _read_jsonl(ADI / "corpus.jsonl")
    queries = _read_jsonl(ADI / "queries.jsonl")
    qrels: Qrels = {}
    for line in (ADI / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        query_id, doc_id, grade = line.split("\t")
        qrels.setdefault(query_id, {})[doc_id] = int(grade)

    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([f"{d['title']} {d['text']}" for d in docs], stopwords="en", show_progress=False),
        show_progress=False,
    )
    doc_indices, scores = retriever.retrieve(
        bm25s.tokenize([q["text"] for q in queries], stopwords="en", show_progress=False),
        k=min(100, len(docs)),
        show_progress=False,
    )
    run: Run = {
        query["_id"]: {
            docs[doc_index]["_id"]: score  # numpy float32, as a pipeline would hand it over
            for doc_index, score in zip(doc_indices[row], scores[row], strict=True)
        }
        for row, query in enumerate(queries)
    }
    return run, qrels


@pytest.mark.parametrize("coarse", [False, True], ids=["bm25", "bm25-rounded-to-ties"])
def test_matches_pytrec_eval_and_textbook_on_adi(adi_bm25, coarse):
    run, qrels = adi_bm25
    if coarse:
        # Rounding makes many equal scores, so tie order decides ranks, even at the cutoffs.
        run = {q: {d: round(float(s) * 2) / 2 for d, s in r.items()} for q, r in run.items()}
    evaluation = evaluate(run, qrels, ORACLE_METRICS)
    float_run = {q: {d: float(s) for d, s in r.items()} for q, r in run.items()}

    assert evaluation.num_queries == len(qrels) == 35
    assert list(evaluation.per_query) == list(ORACLE_METRICS)
    for metric in ORACLE_METRICS:
        direct = pytrec_eval_direct(metric, float_run, qrels)
        scores = evaluation.per_query[metric]
        assert scores.keys() == direct.keys() == qrels.keys()
        for query_id, score in scores.items():
            assert score == pytest.approx(direct[query_id], abs=1e-6), (metric, query_id)
            textbook = textbook_score(metric, float_run[query_id], qrels[query_id])
            assert score == pytest.approx(textbook, abs=1e-6), (metric, query_id)
        assert evaluation.means[metric] == pytest.approx(sum(scores.values()) / 35, abs=1e-12)
    # Sanity: BM25 on ADI is far from random, so the oracle compared meaningful numbers.
    assert evaluation.means["nDCG@10"] > 0.2


# --- hand-checked values ---


def test_hand_checked_single_query():
    run = {"q": {"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0}}
    # Relevant: b (grade 2), d and z (grade 1; z is never retrieved). a is judged not relevant.
    qrels = {"q": {"a": 0, "b": 2, "d": 1, "z": 1}}
    metrics = ["nDCG@3", "MRR@10", "MRR@1", "P@3", "P@5", "Recall@3", "Recall@5", "MAP"]
    evaluation = evaluate(run, qrels, metrics)
    expected = {
        # DCG@3 = 0/log2(2) + 2/log2(3) + 0/log2(4) = 1.2618595
        # IDCG@3 = 2/log2(2) + 1/log2(3) + 1/log2(4) = 2 + 0.6309298 + 0.5 = 3.1309298
        "nDCG@3": (2 / math.log2(3)) / (2 + 1 / math.log2(3) + 0.5),  # = 0.4030303
        "MRR@10": 1 / 2,  # first relevant doc, b, is at rank 2
        "MRR@1": 0.0,  # rank 1 holds a, not relevant
        "P@3": 1 / 3,  # b
        "P@5": 2 / 5,  # b, d
        "Recall@3": 1 / 3,  # b of {b, d, z}
        "Recall@5": 2 / 3,  # b, d of {b, d, z}
        "MAP": (1 / 2 + 2 / 4) / 3,  # precision at b (1/2) and at d (2/4); z counts as 0
    }
    assert expected["nDCG@3"] == pytest.approx(0.4030303, abs=1e-7)
    for metric, value in expected.items():
        assert evaluation.per_query[metric]["q"] == pytest.approx(value, abs=1e-12), metric
        assert evaluation.means[metric] == pytest.approx(value, abs=1e-12), metric
    assert evaluation.num_queries == 1


def test_graded_qrels_use_linear_gain_and_relevance_level_one():
    run = {"q": {"low": 2.0, "high": 1.0}}
    qrels = {"q": {"high": 3, "low": 1}}
    evaluation = evaluate(run, qrels, ["nDCG@2", "P@2"])
    # Linear gains: DCG = 1/1 + 3/log2(3); IDCG = 3/1 + 1/log2(3).
    expected = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))
    assert evaluation.means["nDCG@2"] == pytest.approx(expected, abs=1e-12)
    assert evaluation.means["P@2"] == 1.0  # grade 1 already counts as relevant


# --- ties ---


@pytest.mark.parametrize(
    "ranking",
    [{"d1": 1.0, "d2": 1.0}, {"d2": 1.0, "d1": 1.0}],
    ids=["insertion-d1-first", "insertion-d2-first"],
)
def test_equal_scores_rank_by_doc_id_descending_like_trec_eval(ranking):
    # trec_eval sorts equal scores by strcmp(doc id) descending: d2 before d1, whatever the
    # order of the dict. So the relevant d1 sits at rank 2.
    evaluation = evaluate({"q": ranking}, {"q": {"d1": 1}}, ["MRR@10", "MRR@1", "nDCG@1"])
    assert evaluation.means == {"MRR@10": 0.5, "MRR@1": 0.0, "nDCG@1": 0.0}


def test_tie_order_is_by_string_not_number():
    # "9" > "10" as strings, so 9 ranks first.
    evaluation = evaluate({"q": {"10": 1.0, "9": 1.0}}, {"q": {"10": 1}}, ["MRR@10"])
    assert evaluation.means["MRR@10"] == 0.5


def test_mrr_cutoff_breaks_ties_that_straddle_it():
    run = {"q": {"a": 3.0, "b": 1.0, "c": 1.0, "d": 1.0}}  # trec order: a, d, c, b
    qrels = {"q": {"b": 1}}
    evaluation = evaluate(run, qrels, ["MRR@2", "MRR@3", "MRR@4", "MRR"])
    assert evaluation.means == {"MRR@2": 0.0, "MRR@3": 0.0, "MRR@4": 0.25, "MRR": 0.25}


# --- which queries count ---


def test_missing_query_scores_zero_and_unjudged_queries_do_not_count():
    run = {
        "q1": {"a": 1.0, "x": 0.5},
        "q2": {},  # judged but an empty ranking
        "q4": {"c": 1.0},  # only grade-0 judgments: not counted
        "q5": {"a": 1.0},  # not in qrels: ignored
    }
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"b": 2}, "q4": {"c": 0}}
    run_before, qrels_before = copy.deepcopy(run), copy.deepcopy(qrels)

    evaluation = evaluate(run, qrels)

    assert evaluation.num_queries == 3  # q1, q2, q3
    for metric in DEFAULT_METRICS:
        assert evaluation.per_query[metric].keys() == {"q1", "q2", "q3"}
        assert evaluation.per_query[metric]["q2"] == 0.0
        assert evaluation.per_query[metric]["q3"] == 0.0  # missing from the run
    assert evaluation.means["MRR@10"] == pytest.approx(1 / 3)
    assert evaluation.means["nDCG@10"] == pytest.approx(1 / 3)
    assert evaluation.means["P@10"] == pytest.approx(0.1 / 3)
    assert (run, qrels) == (run_before, qrels_before)  # inputs untouched


def test_default_metrics_and_evaluation_shape():
    evaluation = evaluate({"q": {"a": 1.0}}, {"q": {"a": 1}})
    assert isinstance(evaluation, Evaluation)
    assert tuple(evaluation.means) == tuple(parse_metric(m).name for m in DEFAULT_METRICS)
    assert {"nDCG@10", "Recall@100"} <= set(evaluation.means)


def test_qrels_without_any_relevant_document_raise():
    with pytest.raises(CorpusError, match="no query with a relevance grade > 0"):
        evaluate({"q": {"a": 1.0}}, {"q": {"a": 0}})


def test_no_metrics_raise():
    with pytest.raises(ConfigError, match="no metrics"):
        evaluate({"q": {"a": 1.0}}, {"q": {"a": 1}}, [])


def test_metric_objects_and_duplicates_are_accepted():
    metrics = [parse_metric("map"), "MAP", "ndcg@3"]
    evaluation = evaluate({"q": {"a": 1.0}}, {"q": {"a": 1}}, metrics)
    assert evaluation.means == {"MAP": 1.0, "nDCG@3": 1.0}


# --- metric names ---


@pytest.mark.parametrize(
    ("text", "name", "family", "cutoff", "tracking_name"),
    [
        ("ndcg@10", "nDCG@10", "ndcg", 10, "ndcg_at_10"),
        ("nDCG@10", "nDCG@10", "ndcg", 10, "ndcg_at_10"),
        ("NDCG_CUT_10", "nDCG@10", "ndcg", 10, "ndcg_at_10"),
        ("ndcg_cut.5", "nDCG@5", "ndcg", 5, "ndcg_at_5"),
        ("recall@100", "Recall@100", "recall", 100, "recall_at_100"),
        ("R@100", "Recall@100", "recall", 100, "recall_at_100"),
        ("mrr@10", "MRR@10", "mrr", 10, "mrr_at_10"),
        ("MRR", "MRR", "mrr", None, "mrr"),
        ("recip_rank", "MRR", "mrr", None, "mrr"),
        ("map", "MAP", "map", None, "map"),
        ("MAP@100", "MAP@100", "map", 100, "map_at_100"),
        ("P@5", "P@5", "precision", 5, "p_at_5"),
        ("precision@5", "P@5", "precision", 5, "p_at_5"),
        ("p_10", "P@10", "precision", 10, "p_at_10"),
        (" nDCG@10 ", "nDCG@10", "ndcg", 10, "ndcg_at_10"),
    ],
)
def test_parse_metric_accepted_forms(text, name, family, cutoff, tracking_name):
    metric = parse_metric(text)
    assert metric == Metric(name, family, cutoff)
    assert metric.tracking_name == tracking_name


@pytest.mark.parametrize("text", ["bleu", "ndcg@0", "ndcg@x", "ndcg@-1", "", "ndcg@@10", "ap@"])
def test_parse_metric_rejects_with_accepted_forms(text):
    with pytest.raises(ConfigError) as raised:
        parse_metric(text)
    message = str(raised.value)
    assert repr(text) in message
    assert "nDCG@k" in message and "Recall@k" in message and "MRR@k" in message


def test_evaluate_names_an_unknown_metric():
    with pytest.raises(ConfigError, match="'bleu@4'"):
        evaluate({"q": {"a": 1.0}}, {"q": {"a": 1}}, ["nDCG@10", "bleu@4"])


def test_metric_rejects_inconsistent_fields():
    with pytest.raises(ConfigError, match="canonical name is 'nDCG@10'"):
        Metric("ndcg@10", "ndcg", 10)
    with pytest.raises(ConfigError, match="family"):
        Metric("BLEU", "bleu", None)
    with pytest.raises(ConfigError, match="positive integer"):
        Metric("nDCG@0", "ndcg", 0)


# --- TREC run files ---


def test_trec_run_round_trip(tmp_path):
    import numpy as np

    run = {
        "q2": {"d1": 0.1 + 0.2, "d2": 1e-300, "d3": -2.5},
        "q1": {"10": 1.0, "9": 1.0, "x": np.float32(1.25)},
        "q3": {},
    }
    path = tmp_path / "run.trec"
    write_trec_run(run, path, tag="bm25")

    assert path.read_text().splitlines() == [
        "q1 Q0 x 1 1.25 bm25",
        "q1 Q0 9 2 1.0 bm25",  # tie with "10", broken by doc id desc as trec_eval does
        "q1 Q0 10 3 1.0 bm25",
        "q2 Q0 d1 1 0.30000000000000004 bm25",
        "q2 Q0 d2 2 1e-300 bm25",
        "q2 Q0 d3 3 -2.5 bm25",
    ]
    expected = {q: {d: float(s) for d, s in r.items()} for q, r in run.items() if r}
    assert read_trec_run(path) == expected
    assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]  # no temp file left behind

    write_trec_run({"q": {"d": 2.0}}, path, tag="again")  # replaces the file whole
    assert read_trec_run(path) == {"q": {"d": 2.0}}


def test_written_run_evaluates_the_same_in_pytrec_eval(tmp_path):
    import pytrec_eval

    run = {"q": {"a": 1.0, "b": 1.0, "c": 0.5}}
    qrels = {"q": {"a": 1, "c": 2}}
    path = tmp_path / "run.trec"
    write_trec_run(run, path, tag="t")
    with path.open() as handle:
        parsed = pytrec_eval.parse_run(handle)
    direct = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(parsed)
    assert evaluate(run, qrels, ["nDCG@10"]).means["nDCG@10"] == direct["q"]["ndcg_cut_10"]


@pytest.mark.parametrize("tag", ["", "two words"])
def test_write_trec_run_rejects_bad_tag(tmp_path, tag):
    with pytest.raises(ConfigError, match="tag"):
        write_trec_run({"q": {"d": 1.0}}, tmp_path / "run.trec", tag=tag)


def test_write_trec_run_rejects_ids_with_whitespace(tmp_path):
    with pytest.raises(CorpusError, match="doc id 'a b'"):
        write_trec_run({"q": {"a b": 1.0}}, tmp_path / "run.trec", tag="t")
    assert not list(tmp_path.iterdir())


def test_write_trec_run_into_missing_folder_raises(tmp_path):
    with pytest.raises(CorpusError, match="cannot write run file"):
        write_trec_run({"q": {"d": 1.0}}, tmp_path / "absent" / "run.trec", tag="t")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("q Q0 d 1 1.0\n", "line 1: expected 6 fields"),
        ("q Q0 d 1 high t\n", "line 1: score 'high' is not a number"),
        ("q Q0 d 1 1.0 t\n\nq Q0 d 2 0.5 t\n", "line 3: doc 'd' appears twice"),
    ],
)
def test_read_trec_run_reports_file_and_line(tmp_path, content, message):
    path = tmp_path / "run.trec"
    path.write_text(content)
    with pytest.raises(CorpusError, match=message) as raised:
        read_trec_run(path)
    assert str(path) in str(raised.value)


def test_read_trec_run_missing_file(tmp_path):
    with pytest.raises(CorpusError, match="cannot read run file"):
        read_trec_run(tmp_path / "absent.trec")
