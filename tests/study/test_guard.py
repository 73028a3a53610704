"""Tests of workbench/study/guard.py: a study tuned on generated questions keeps its choice when the
questions back it, and exports the robust default when they do not; both through `workbench run`.

The two judged sets are built, not generated: ADI's queries under new ids, judged relevant to the top
two documents of one BM25 setting (k1 0.5, b 0.3: every query agrees which setting is best), or to
two seeded random documents (noise labels: no setting is better, whichever wins does so by luck).
"""

from __future__ import annotations

import json
import random
import shutil
import tomllib
from pathlib import Path

import pytest
from stores import ADI, link_test_stores
from typer.testing import CliRunner

from workbench.cli import app
from workbench.retrieval.config import BM25Config, DenseConfig, PipelineConfig
from workbench.retrieval.corpus import load_corpus
from workbench.retrieval.pipeline import Pipeline, Resources
from workbench.study.guard import GeneratedChoiceGuard, is_generated_split, robust_default
from workbench.study.search_space import SearchSpace
from workbench.synthesis.writer import CARD_NAME

WIDE = {"COLUMNS": "400"}
BM25_GRID = '[space.fusion]\nmethod = "bm25"\n[space.bm25]\nk1 = [0.5, 1.0, 1.5, 2.0]\nb = [0.3, 0.6, 0.75, 1.0]\n'


def judged_set(folder: Path, labels: str, session_cache) -> Path:
    """ADI's documents, its real 'test' split, and a 'synthetic' split of its queries under new ids,
    judged by ``labels``: "agree" (one BM25 setting's top two) or "noise" (two seeded random documents)."""
    adi = load_corpus(ADI)
    queries = {f"g{query_id}": text for query_id, text in adi.queries.items()}
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").symlink_to((ADI / "corpus.jsonl").resolve())
    lines = [json.dumps({"_id": q, "text": t}) for q, t in (adi.queries | queries).items()]
    (folder / "queries.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copy(ADI / "qrels" / "test.tsv", folder / "qrels" / "test.tsv")
    winner = PipelineConfig(name="winner", retrievers=(BM25Config(k1=0.5, b=0.3),))
    run = Pipeline(winner, Resources(adi, session_cache)).search(queries).run
    rng = random.Random(3)
    rows = ["query-id\tcorpus-id\tscore"]
    for query_id in queries:
        if labels == "agree":
            relevant = [doc for doc, _ in sorted(run[query_id].items(), key=lambda item: -item[1])[:2]]
        else:
            relevant = rng.sample(sorted(adi.documents), 2)
        rows += [f"{query_id}\t{doc}\t1" for doc in relevant]
    (folder / "qrels" / "synthetic.tsv").write_text("\n".join(rows) + "\n")
    return folder


def guarded_run(tmp_path: Path, labels: str, session_cache, mlflow_template, *extra: str):
    corpus = judged_set(tmp_path / labels, labels, session_cache)
    study = tmp_path / f"{labels}.toml"
    study.write_text(
        f'name = "{labels}"\ncorpus = "{corpus}"\ntune_split = "synthetic"\nheldout = "split"\n'
        f'heldout_fraction = 0\nn_trials = 10\nsampler = "random"\nseed = 4\nlatency_sample = 2\n{BM25_GRID}'
    )
    state = tmp_path / "state"
    state.mkdir()
    link_test_stores(state, session_cache, mlflow_template)
    args = ["run", study, "--state-dir", state, "--out", tmp_path / "best.toml", *extra]
    result = CliRunner().invoke(app, [str(a) for a in args], env=WIDE, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output, tomllib.loads((tmp_path / "best.toml").read_text())


def test_questions_that_agree_keep_the_choice(tmp_path, session_cache, mlflow_template):
    output, best = guarded_run(tmp_path, "agree", session_cache, mlflow_template)
    provenance = best["provenance"]
    guard = provenance["guard"]
    assert guard["keeps_choice"] is True and guard["queries"] == 35 and guard["trials"] >= 3
    assert guard["split_half_agreement"] >= guard["min_agreement"] == 0.5
    assert guard["p_beats_robust_default"] >= 0.95 and guard["robust_default"] == "BM25 alone at default settings"
    assert provenance["exported"] == "tuned"
    bm25 = best["retrievers"][0]
    assert (bm25["k1"], bm25["b"]) == (0.5, 0.3)  # the setting the labels were made from
    assert (
        "tuned on generated questions, kept: the generated questions rank the trials reliably "
        "and it clearly beats the robust default" in output
    )


def test_noise_labels_export_the_robust_default_and_say_why(tmp_path, session_cache, mlflow_template):
    output, best = guarded_run(tmp_path, "noise", session_cache, mlflow_template)
    provenance = best["provenance"]
    guard = provenance["guard"]
    assert guard["keeps_choice"] is False and guard["split_half_agreement"] < 0.5
    assert guard["p_beats_robust_default"] < 0.95
    assert provenance["exported"] == "robust-default"
    assert provenance["exported_config"] == "BM25 alone at default settings"
    assert [(r["kind"], r["k1"], r["b"]) for r in best["retrievers"]] == [("bm25", 1.5, 0.75)]
    assert "rerank" not in best or best["rerank"]["model"] == "none"
    assert provenance["trial"] == guard["chosen_trial"]  # the provenance still names the tuned trial
    line = next(line for line in output.splitlines() if line.startswith("exported the robust default"))
    assert "do not rank the trials reliably" in line and f"tau {guard['split_half_agreement']:.2f}" in line


def test_export_tuned_keeps_the_choice_the_guard_refused(tmp_path, session_cache, mlflow_template):
    guarded_run(tmp_path, "noise", session_cache, mlflow_template)
    out = tmp_path / "forced.toml"
    args = ["export", tmp_path / "noise.toml", "--tuned", "--out", out, "--state-dir", tmp_path / "state"]
    result = CliRunner().invoke(app, [str(a) for a in args], env=WIDE, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    provenance = tomllib.loads(out.read_text())["provenance"]
    assert provenance["exported"] == "tuned" and provenance["forced_tuned"] is True
    assert "the guard would export the robust default" in provenance["export_reason"]


def test_the_robust_default_is_rrf_of_bm25_and_the_first_dense_model_else_bm25_alone():
    hybrid, label = robust_default(SearchSpace.model_validate({"dense": {"model": ["a-model", "b-model"]}}), "d")
    assert label == "RRF of BM25 and dense at default settings" and hybrid.fusion.method == "rrf"
    assert hybrid.retrievers == (BM25Config(), DenseConfig(model="a-model")) and not hybrid.rerank.enabled
    alone, label = robust_default(SearchSpace.model_validate({"fusion": {"method": ["bm25"]}}), "d")
    assert alone.retrievers == (BM25Config(),) and label == "BM25 alone at default settings"
    listed = SearchSpace.model_validate({"retrievers": [{"kind": "bm25"}, {"kind": "dense", "model": "m"}]})
    assert robust_default(listed, "d")[0].retrievers == (BM25Config(), DenseConfig(model="m"))


@pytest.mark.parametrize("split, card_split, generated", [
    ("synthetic", None, True),  # the name says so
    ("questions", "questions", True),  # the card says so
    ("train", "questions", False),
    ("train", None, False),
])  # fmt: skip
def test_a_split_is_generated_when_its_name_or_the_card_says_so(tmp_path, split, card_split, generated):
    if card_split is not None:
        (tmp_path / CARD_NAME).write_text(json.dumps({"split": card_split}))
    assert is_generated_split(tmp_path, split) is generated


@pytest.mark.parametrize(
    ("agreement", "p_beats_default", "keeps", "why"),
    [
        (0.8, 0.97, True, "rank the trials reliably and it clearly beats"),
        # A clear win on questions that do not rank the trials alike is not enough: on SciFact the
        # generated questions backed BM25 alone (P 0.95, tau 0.49) and real queries preferred RRF.
        (0.49, 0.952, False, "clearly beats the robust default (RRF of BM25 and dense at default settings) on the generated questions, but they do not rank"),
        (0.8, 0.9, False, "rank the trials reliably, but the choice does not clearly beat"),
        (0.2, 0.6, False, "do not rank the trials reliably and the choice does not clearly beat"),
        (None, 0.99, False, "no split-half agreement"),
    ],
)
def test_the_choice_is_kept_only_when_the_questions_are_reliable_and_it_clearly_wins(
    agreement, p_beats_default, keeps, why
):
    default, label = robust_default(SearchSpace(), "default")
    guard = GeneratedChoiceGuard(
        queries=40, trials=12, chosen_trial=3, chosen_mean=0.9, agreement=agreement, runner_up_trial=5,
        p_beats_runner_up=0.7, default_config=default, default_label=label, default_mean=0.87,
        p_beats_default=p_beats_default, chosen_is_default=False, min_agreement=0.5, clearly_better=0.95,
        metric="nDCG@10",
    )  # fmt: skip
    assert guard.keeps_choice is keeps
    assert why in guard.reason()
    switched_off = GeneratedChoiceGuard(**{**guard.__dict__, "min_agreement": -1.0})
    assert switched_off.keeps_choice and "switched off" in switched_off.reason()
