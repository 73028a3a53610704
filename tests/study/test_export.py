"""Exporting a trial: the written TOML is the trial's pipeline, carries its provenance, and
reproduces the trial's tuning score exactly when run again on the tuning queries."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import stores
from stores import ADI, BM25_OR_HYBRID, link_test_stores
from typer.testing import CliRunner

from workbench.cli import app
from workbench.evaluation.heldout import build_report
from workbench.evaluation.metrics import Evaluation, evaluate
from workbench.retrieval.cache import Cache
from workbench.retrieval.config import BM25Config, PipelineConfig, load_pipeline_config, read_toml
from workbench.retrieval.corpus import load_corpus
from workbench.retrieval.pipeline import Pipeline, Resources
from workbench.study.attributes import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    EXPORT_REASON_TAG,
    EXPORTED_TAG,
    LATENCY_KEY,
    METRICS_ATTR,
)
from workbench.study.config import load_study_config
from workbench.study.export import PARETO_TOLERANCE, TrialVerdict, choose_export, choose_trial
from workbench.study.objective import trial_config
from workbench.study.runner import run_study
from workbench.study.session import StudySession
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

    result = export(finished, out, "--tuned")  # the pick, even where the verdict puts a baseline above it (see below)

    assert result.exit_code == 0, result.output
    best = finished.study.best_trial
    assert f"trial {best.number}" in result.output
    assert load_pipeline_config(out) == trial_config(best)


def test_the_exported_file_carries_its_provenance(finished, tmp_path):
    out = tmp_path / "best.toml"
    assert export(finished, out).exit_code == 0

    provenance = read_toml(out)["provenance"]
    above = provenance["heldout"]["baseline_above_tuned"]  # the study's pick, or the baseline above it
    assert provenance["exported"] == ("tuned" if above == "none" else above)

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
    assert export(finished, out, "--tuned").exit_code == 0

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


# --- never export a pipeline the verdict puts below a baseline ------------------------------------------

BM25_DEFAULTS = PipelineConfig(name="bm25-baseline", retrievers=(BM25Config(),))
# BM25 near-binary in term frequency and fully length-normalised: worse than BM25's defaults on ADI.
POOR = PipelineConfig(name="poor", retrievers=(BM25Config(k1=0.05, b=1.0),))
POOR_SPACE = """
[space.fusion]
method = "bm25"
[space.bm25]
k1 = 0.05
b = 1.0
"""


def _scores(values: list[float]) -> dict[str, float]:
    return {f"q{number}": value for number, value in enumerate(values)}


def _report(tuned: list[float], bm25: list[float], dense: list[float]):
    metric = "nDCG@10"
    evaluations = {
        name: Evaluation({metric: _scores(values)}, {metric: sum(values) / len(values)}, len(values))
        for name, values in (("tuned", tuned), ("bm25", bm25), ("dense", dense))
    }
    return build_report("test", evaluations, metric, tuning_value=0.9)


def _verdict(report, baseline_config=None):
    trial = SimpleNamespace(number=4, user_attrs={CONFIG_ATTR: POOR.to_toml_dict()}, params={})
    return TrialVerdict(None, trial, report, None, baseline_config, "default settings" if baseline_config else "")


LOW, HIGH = [0.2, 0.3, 0.1, 0.4, 0.2, 0.3, 0.1, 0.2], [0.6, 0.7, 0.5, 0.8, 0.6, 0.7, 0.5, 0.6]


def test_a_baseline_above_the_tuned_pipeline_is_exported_with_the_figures():
    report = _report(tuned=LOW, bm25=HIGH, dense=[value + 0.1 for value in LOW])

    choice = choose_export(_verdict(report, BM25_DEFAULTS))

    assert report.baseline_above_tuned == "bm25"
    assert choice.config == BM25_DEFAULTS and choice.system == "bm25" and not choice.forced
    assert choice.reason.startswith("exported baseline 'bm25-only' instead of the tuned pipeline: its held-out nDCG@10")
    assert "0.6250 beats the tuned pipeline's 0.2250 (-0.4000, p " in choice.reason and "Holm" in choice.reason
    assert choice.to_provenance() == {
        "exported": "bm25",
        "export_reason": choice.reason,
        "forced_tuned": False,
        "exported_config": "default settings",
    }
    assert "BELOW bm25-only" in report.verdict()


def test_the_best_of_several_baselines_above_the_tuned_pipeline_is_the_one_exported():
    report = _report(tuned=LOW, bm25=[value + 0.1 for value in LOW], dense=HIGH)
    assert report.baseline_above_tuned == "dense"


def test_forcing_the_tuned_pipeline_keeps_it_and_says_a_baseline_scores_above_it():
    report = _report(tuned=LOW, bm25=HIGH, dense=LOW)

    choice = choose_export(_verdict(report, BM25_DEFAULTS), force_tuned=True)

    assert choice.config == POOR and choice.system == "tuned" and choice.forced
    assert choice.reason.startswith("exported the tuned pipeline as asked, although baseline 'bm25-only' scores above")
    assert choice.to_provenance()["forced_tuned"] is True


@pytest.mark.parametrize(
    ("differences", "significant"), [([0.5] * 8, True), ([0.1, -0.09] * 4, False)], ids=["significantly", "barely"]
)
def test_a_tuned_pipeline_at_or_above_every_baseline_is_exported(differences, significant):
    report = _report(tuned=[value + d for value, d in zip(LOW, differences)], bm25=LOW, dense=LOW)

    choice = choose_export(_verdict(report))

    assert report.baseline_above_tuned is None
    assert choice.config == POOR and choice.system == "tuned"
    assert report.beats_baselines == significant
    assert ("not significantly" in choice.reason) == (not report.beats_baselines)
    assert report.verdict().startswith("WARNING") != report.beats_baselines


def favouring_corpus(folder: Path, adi, session_cache, heldout_favours: PipelineConfig) -> Path:
    """ADI's documents and queries with made-up judgements: on the queries where the poor config and
    BM25's defaults rank different documents first, "train" (each query again, ids "t<id>") judges the
    poor config's first document relevant, and "test" the first document of ``heldout_favours``."""
    resources = Resources(adi, session_cache)
    queries = adi.judged_queries("test")
    poor = Pipeline(POOR, resources).search(queries).run
    favoured = Pipeline(heldout_favours, resources).search(queries).run
    bm25 = Pipeline(BM25_DEFAULTS, resources).search(queries).run

    def first(run, query_id: str) -> str:
        return max(run[query_id].items(), key=lambda item: item[1])[0]

    differ = [qid for qid in queries if first(poor, qid) != first(bm25, qid)]
    assert len(differ) >= 10
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").symlink_to(ADI / "corpus.jsonl")
    copies = [json.dumps({"_id": f"t{qid}", "text": queries[qid], "metadata": {}}) for qid in differ]
    lines = (ADI / "queries.jsonl").read_text().splitlines()
    (folder / "queries.jsonl").write_text("\n".join([*lines, *copies]) + "\n")
    header = "query-id\tcorpus-id\tscore\n"
    (folder / "qrels" / "train.tsv").write_text(header + "".join(f"t{q}\t{first(poor, q)}\t1\n" for q in differ))
    (folder / "qrels" / "test.tsv").write_text(header + "".join(f"{q}\t{first(favoured, q)}\t1\n" for q in differ))
    return folder


def run_poor_study(folder: Path, corpus: Path, session_cache, mlflow_template, tune_split: str = "train"):
    state = folder / "state"
    state.mkdir()
    link_test_stores(state, session_cache, mlflow_template)
    path = folder / "poor.toml"
    path.write_text(
        f'name = "poor"\ncorpus = "{corpus}"\ntune_split = "{tune_split}"\nheldout_split = "test"\nn_trials = 3\n'
        f'sampler = "random"\nseed = 3\nlatency_sample = 2\n{POOR_SPACE}'
    )
    result = CliRunner().invoke(app, ["run", str(path), "--state-dir", str(state)], env=WIDE, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return SimpleNamespace(path=path, state=state, output=result.output, config=load_study_config(path))


@pytest.fixture(scope="module")
def losing(tmp_path_factory, adi, session_cache, mlflow_template):
    """A study whose pick (the poor config, best on the tuning judgements) loses to BM25 on the held-out ones."""
    folder = tmp_path_factory.mktemp("losing")
    corpus = favouring_corpus(folder / "corpus", adi, session_cache, heldout_favours=BM25_DEFAULTS)
    return run_poor_study(folder, corpus, session_cache, mlflow_template)


def test_a_study_whose_pick_loses_to_bm25_exports_bm25_and_says_why(losing, tmp_path):
    from stores import mlflow_runs

    best = losing.state / "studies" / "poor" / "best.toml"
    out = tmp_path / "best.toml"
    result = export(losing, out)
    assert result.exit_code == 0, result.output

    for written in (best, out):  # what `run` wrote and what `export` writes
        assert load_pipeline_config(written) == BM25_DEFAULTS
        provenance = read_toml(written)["provenance"]
        assert provenance["exported"] == "bm25" and provenance["forced_tuned"] is False
        assert provenance["export_reason"].startswith("exported baseline 'bm25-only' instead of the tuned pipeline")
        assert provenance["exported_config"] == "default settings"
        assert provenance["heldout"]["baseline_above_tuned"] == "bm25"
        assert provenance["trial"] == 2  # the pick the verdict judged: the first trial after the two baselines
    reason = read_toml(out)["provenance"]["export_reason"]
    assert reason[:60] in losing.output and reason[:60] in result.output
    tracking_uri = StudySession(losing.config, losing.state).locations.tracking_uri
    _, parent, _ = mlflow_runs(tracking_uri, "poor")
    assert parent.data.tags[EXPORTED_TAG] == "bm25" and parent.data.tags[EXPORT_REASON_TAG] == reason


def test_export_tuned_forces_the_tuned_pipeline(losing, tmp_path):
    out = tmp_path / "tuned.toml"

    result = export(losing, out, "--tuned")

    assert result.exit_code == 0, result.output
    assert load_pipeline_config(out).retrievers == POOR.retrievers
    provenance = read_toml(out)["provenance"]
    assert provenance["exported"] == "tuned" and provenance["forced_tuned"] is True
    assert "as asked, although baseline 'bm25-only' scores above it" in provenance["export_reason"]


def test_the_html_report_says_which_config_is_exported(losing, tmp_path):
    page = tmp_path / "report.html"
    args = ["report", str(losing.path), "--out", str(page), "--state-dir", str(losing.state)]
    assert CliRunner().invoke(app, args, env=WIDE, catch_exceptions=False).exit_code == 0
    assert "Export: exported baseline &#39;bm25-only&#39; instead of the tuned pipeline" in page.read_text()


def test_a_study_whose_pick_beats_the_baselines_exports_it(tmp_path, adi, session_cache, mlflow_template):
    corpus = favouring_corpus(tmp_path / "corpus", adi, session_cache, heldout_favours=POOR)
    winning = run_poor_study(tmp_path, corpus, session_cache, mlflow_template)

    best = read_toml(winning.state / "studies" / "poor" / "best.toml")

    assert best["provenance"]["exported"] == "tuned" and best["provenance"]["heldout"]["beats_best_baseline"]
    assert load_pipeline_config(winning.state / "studies" / "poor" / "best.toml").retrievers == POOR.retrievers


def test_a_study_tuned_on_generated_questions_exports_bm25_when_it_wins_on_judged_ones(
    tmp_path, adi, session_cache, mlflow_template
):
    from workbench.synthesis.writer import SyntheticQuery, write_synthetic_corpus

    made_up = load_corpus(favouring_corpus(tmp_path / "made-up", adi, session_cache, heldout_favours=BM25_DEFAULTS))
    texts = adi.judged_queries("test")
    generated = [  # the "train" questions as if generated, each from the document judged relevant to it
        SyntheticQuery(f"g{qid[1:]}", next(iter(docs)), texts[qid[1:]])
        for qid, docs in made_up.split_qrels("train").items()
    ]
    card = {"split": "synthetic", "generator": {"model": "hand-made"}, "counts": {"kept": len(generated)}}
    write_synthetic_corpus(made_up, tmp_path / "synthetic", generated, card)
    study = run_poor_study(tmp_path, tmp_path / "synthetic", session_cache, mlflow_template, tune_split="synthetic")

    best = study.state / "studies" / "poor" / "best.toml"

    assert "the verdict on the real held-out queries ('test') is the one that counts" in study.output
    assert load_pipeline_config(best) == BM25_DEFAULTS
    assert read_toml(best)["provenance"]["exported"] == "bm25"
