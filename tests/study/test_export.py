"""Exporting a trial: the written TOML is the trial's pipeline, carries its provenance, and
reproduces the trial's tuning score exactly when run again on the tuning queries."""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import stores
from stores import ADI, BM25_OR_HYBRID, link_test_stores
from typer.testing import CliRunner

from workbench.cli import app
from workbench.evaluation.metrics import evaluate
from workbench.retrieval.cache import Cache
from workbench.retrieval.config import load_pipeline_config, read_toml
from workbench.retrieval.corpus import load_corpus
from workbench.retrieval.pipeline import Pipeline, Resources
from workbench.study.attributes import BASELINE_ATTR, LATENCY_KEY, METRICS_ATTR
from workbench.study.config import load_study_config
from workbench.study.export import PARETO_TOLERANCE, choose_trial
from workbench.study.objective import trial_config
from workbench.study.runner import run_study
from workbench.study.splits import study_splits

WIDE = {"COLUMNS": "200"}
COMPLETE = optuna.trial.TrialState.COMPLETE


write_study = functools.partial(stores.write_study, space=BM25_OR_HYBRID, seed=11)


def run_small_study(folder: Path, name: str, n_trials: int, session_cache, mlflow_template, extra: str = ""):
    state = folder / "state"
    state.mkdir()
    link_test_stores(state, session_cache, mlflow_template)
    path = write_study(folder, name, n_trials, extra=extra)
    config = load_study_config(path)
    outcome = run_study(config, state, show_progress=False)
    return SimpleNamespace(path=path, config=config, state=state, study=outcome.study)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, session_cache, mlflow_template):
    return run_small_study(tmp_path_factory.mktemp("export-study"), "exportable", 5, session_cache, mlflow_template)


def export(finished, out: Path, *extra: str):
    args = ["export", str(finished.path), "--out", str(out), "--state-dir", str(finished.state), *extra]
    return CliRunner().invoke(app, args, env=WIDE, catch_exceptions=False)


def tuning_score(config_path: Path, finished) -> float:
    """Scores an exported config on the study's tuning queries, as the study did."""
    corpus = load_corpus(finished.config.corpus)
    tune = study_splits(finished.config, corpus).tune
    pipeline = Pipeline(load_pipeline_config(config_path), Resources(corpus, Cache(finished.state / "cache")))
    metric = finished.config.metric
    return evaluate(pipeline.search(tune.queries).run, tune.qrels, [metric]).means[metric]


def test_export_writes_the_best_trials_pipeline(finished, tmp_path):
    out = tmp_path / "best.toml"

    result = export(finished, out)

    assert result.exit_code == 0, result.output
    best = finished.study.best_trial
    assert f"trial {best.number}" in result.output
    assert load_pipeline_config(out) == trial_config(best)


def test_the_exported_file_carries_its_provenance(finished, tmp_path):
    out = tmp_path / "best.toml"
    assert export(finished, out).exit_code == 0

    provenance = read_toml(out)["provenance"]

    best = finished.study.best_trial
    corpus = load_corpus(ADI)
    assert provenance["study"] == finished.config.name
    assert provenance["trial"] == best.number
    assert provenance["tuning_metrics"] == best.user_attrs[METRICS_ATTR]
    assert provenance["tuning_metrics"]["ndcg_at_10"] == best.values[0]
    assert provenance["corpus_fingerprint"] == corpus.fingerprint
    assert provenance["params"] == best.params
    assert provenance["metric"] == finished.config.metric
    assert {"optuna", "mlflow", "bm25s", "faiss-cpu", "sentence-transformers", "torch"} <= provenance["packages"].keys()
    held_out = study_splits(finished.config, corpus).heldout
    assert provenance["heldout"]["num_queries"] == len(held_out.queries)


def test_the_exported_config_reproduces_the_trials_tuning_score(finished, tmp_path):
    out = tmp_path / "best.toml"
    assert export(finished, out).exit_code == 0

    assert tuning_score(out, finished) == finished.study.best_trial.values[0]


def test_export_of_a_chosen_trial(finished, tmp_path):
    best = finished.study.best_trial
    other = next(trial for trial in finished.study.trials if trial.state == COMPLETE and trial.number != best.number)
    out = tmp_path / "other.toml"

    result = export(finished, out, "--trial", str(other.number))

    assert result.exit_code == 0, result.output
    assert load_pipeline_config(out) == trial_config(other)
    provenance = read_toml(out)["provenance"]
    assert provenance["trial"] == other.number
    assert provenance["baseline"] == (other.user_attrs.get(BASELINE_ATTR) or "none")
    assert tuning_score(out, finished) == other.values[0]


def test_exporting_a_trial_that_does_not_exist_exits_2(finished, tmp_path):
    out = tmp_path / "nothing.toml"

    result = export(finished, out, "--trial", "999")

    assert result.exit_code == 2
    assert "trial 999" in result.output
    assert "not a finished trial" in result.output
    assert not out.exists()


@pytest.mark.parametrize("folder_exists", [True, False])
def test_exporting_a_study_that_never_ran_exits_2(finished, tmp_path, folder_exists):
    state = tmp_path / "elsewhere"
    if folder_exists:
        state.mkdir()
    args = ["export", str(finished.path), "--out", str(tmp_path / "x.toml"), "--state-dir", str(state)]

    result = CliRunner().invoke(app, args, env=WIDE, catch_exceptions=False)

    assert result.exit_code == 2
    assert f"no study named '{finished.config.name}'" in result.output
    assert not (state / "optuna.db").exists()  # looking leaves nothing behind


def test_the_two_objective_choice_is_the_fastest_pareto_trial_near_the_best_metric():
    study = optuna.create_study(directions=["maximize", "minimize"])
    best_metric = 0.5
    designed = [
        (best_metric, 10.0),  # 0: best metric, slow
        (best_metric - PARETO_TOLERANCE / 2, 5.0),  # 1: within tolerance, faster: the choice
        (best_metric - 3 * PARETO_TOLERANCE, 1.0),  # 2: fastest, but gives up too much
        (best_metric - PARETO_TOLERANCE, 20.0),  # 3: dominated by 0
    ]
    for values in designed:
        study.add_trial(optuna.trial.create_trial(values=list(values)))

    chosen = choose_trial(study)

    assert {trial.number for trial in study.best_trials} == {0, 1, 2}
    assert chosen.number == 1
    assert choose_trial(study, trial_number=3).number == 3  # an explicit trial wins over the rule


def test_a_latency_study_exports_a_pareto_trial(tmp_path, session_cache, mlflow_template):
    latency = run_small_study(tmp_path, "fast", 4, session_cache, mlflow_template, extra='second_objective = "latency"')
    study = latency.study
    assert len(study.directions) == 2

    chosen = choose_trial(study)

    pareto = study.best_trials
    assert chosen.number in {trial.number for trial in pareto}
    assert chosen.values[0] >= max(trial.values[0] for trial in pareto) - PARETO_TOLERANCE
    assert chosen.values[1] == chosen.user_attrs[METRICS_ATTR][LATENCY_KEY]
    out = tmp_path / "fast-best.toml"  # fast.toml is the study file, which export never overwrites
    result = export(latency, out)
    assert result.exit_code == 0, result.output
    assert read_toml(out)["provenance"]["trial"] == chosen.number
