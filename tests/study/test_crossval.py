"""k-fold cross-validation on ADI (35 judged queries): folds never leak, every judged query is
scored once by a config that never saw it, the same seed gives the same folds and verdict, the
default switches on the number of judged queries, and tiny folds get a warning.

Real Optuna, MLflow (sqlite), bm25s and faiss; a BM25-only space with few trials keeps it fast.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from stores import link_test_stores
from typer.testing import CliRunner

import workbench.study.objective
from workbench.cli import app
from workbench.errors import ConfigError, StudyError
from workbench.evaluation.metrics import evaluate
from workbench.retrieval.pipeline import Pipeline
from workbench.reporting.views import folds_view
from workbench.study.attributes import TARGET_ATTR
from workbench.study.config import load_study_config
from workbench.study.crossval import tuned_baseline_for_export
from workbench.study.nested import nested_studies
from workbench.study.optuna_study import load_optuna_study
from workbench.study.runner import run_study
from workbench.study.session import StudySession
from workbench.study.splits import KFOLD_BELOW, MIN_QUERIES_PER_FOLD, heldout_mode, study_splits

ADI = Path(__file__).resolve().parents[2] / "corpora" / "adi"

BM25_ONLY = """
[space.fusion]
method = "bm25"
[space.bm25]
k1 = { low = 0.5, high = 2.0 }
b = { low = 0.3, high = 1.0 }
"""

FOLD_PIPELINE = re.compile(r"-fold-(\d+)(?:-(bm25|dense))?-trial-\d+$")


def write_study(folder: Path, name: str, extra: str = "", n_trials: int = 4, seed: int = 7) -> Path:
    """A study over ADI's one judged split, holding nothing out explicitly: k-fold by default."""
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\ncorpus = "{ADI}"\ntune_split = "test"\nn_trials = {n_trials}\n'
        f'sampler = "random"\nseed = {seed}\nlatency_sample = 2\n{extra}\n{BM25_ONLY}'
    )
    return path


def make_state(folder: Path, session_cache, mlflow_template: Path) -> Path:
    state = folder / "state"
    state.mkdir(parents=True)
    link_test_stores(state, session_cache, mlflow_template)
    return state


class Searches:
    """Which queries the objective's pipelines searched, by the nested study (fold, baseline) they belong to."""

    def __init__(self):
        self.by_study: dict[tuple[int | None, str | None], set[str]] = {}

    def pipeline_class(self):
        searches = self

        class RecordingPipeline(Pipeline):  # the real pipeline, remembering which queries it was given
            def search(self, queries):
                match = FOLD_PIPELINE.search(self.config.name)
                key = (int(match.group(1)), match.group(2)) if match else (None, None)
                searches.by_study.setdefault(key, set()).update(queries)
                return super().search(queries)

        return RecordingPipeline


def run_recorded(args: list[str]) -> tuple[str, Searches]:
    """Runs the CLI in this process with the objective's pipelines recording their queries."""
    searches = Searches()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(workbench.study.objective, "Pipeline", searches.pipeline_class())
        result = CliRunner().invoke(app, args, env={"COLUMNS": "250"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output, searches


@pytest.fixture(scope="module")
def kfold(tmp_path_factory, session_cache, mlflow_template):
    folder = tmp_path_factory.mktemp("kfold")
    state = make_state(folder, session_cache, mlflow_template)
    path = write_study(folder, "cv")
    output, searches = run_recorded(["run", str(path), "--state-dir", str(state)])
    runner = CliRunner()
    best = folder / "best.toml"
    exported = runner.invoke(app, ["export", str(path), "--out", str(best), "--state-dir", str(state)])
    assert exported.exit_code == 0, exported.output
    page = folder / "report.html"
    reported = runner.invoke(app, ["report", str(path), "--out", str(page), "--state-dir", str(state)])
    assert reported.exit_code == 0, reported.output
    config = load_study_config(path)
    session = StudySession(config, state)
    return SimpleNamespace(
        path=path,
        state=state,
        config=config,
        session=session,
        output=output,
        searches=searches,
        provenance=tomllib.loads(best.read_text())["provenance"],
        page=page.read_text(),
        verdict=session.verdict(),
    )


# --- folds ------------------------------------------------------------------------------------


def test_folds_are_seeded_disjoint_balanced_and_cover_every_judged_query(tmp_path, adi):
    config = load_study_config(write_study(tmp_path, "folds"))
    splits = study_splits(config, adi)
    judged = set(adi.judged_queries("test"))

    assert splits.mode == "kfold" and splits.heldout is None
    assert set(splits.tune.queries) == judged  # the final study tunes on every judged query
    held = [set(fold.heldout.queries) for fold in splits.folds]
    assert [fold.number for fold in splits.folds] == [1, 2, 3, 4, 5]
    assert sorted(map(len, held)) == [7, 7, 7, 7, 7]
    assert set().union(*held) == judged and sum(map(len, held)) == len(judged)
    for fold, fold_held in zip(splits.folds, held):
        assert set(fold.tune.queries) == judged - fold_held
        assert set(fold.heldout.qrels) == fold_held and set(fold.tune.qrels) == judged - fold_held
    assert study_splits(config, adi) == splits  # seeded: the same every time
    reseeded = load_study_config(write_study(tmp_path, "folds", seed=8))
    assert [set(f.heldout.queries) for f in study_splits(reseeded, adi).folds] != held


def test_folds_are_stratified_by_relevant_documents(tmp_path, adi):
    config = load_study_config(write_study(tmp_path, "strata"))
    qrels = adi.split_qrels("test")
    relevant = {qid: sum(1 for grade in qrels[qid].values() if grade > 0) for qid in adi.judged_queries("test")}
    counts = sorted(relevant.values())
    for fold in study_splits(config, adi).folds:
        # the j-th fewest relevant documents of a fold lie within the j-th block of five over all queries
        for j, count in enumerate(sorted(relevant[qid] for qid in fold.heldout.queries)):
            assert counts[5 * j] <= count <= counts[5 * j + 4]


def test_more_folds_than_queries_is_a_study_error(tmp_path, adi):
    config = load_study_config(write_study(tmp_path, "many", extra="folds = 36"))
    with pytest.raises(StudyError, match="35 judged queries cannot fill 36 folds"):
        study_splits(config, adi)


# --- which mode -----------------------------------------------------------------------------


def test_kfold_is_the_default_below_the_threshold_unless_a_fixed_split_is_named(tmp_path, adi):
    auto = load_study_config(write_study(tmp_path, "auto"))
    assert heldout_mode(auto, KFOLD_BELOW - 1) == "kfold"
    assert heldout_mode(auto, KFOLD_BELOW) == "split"
    assert study_splits(auto, adi).mode == "kfold"  # ADI: 35 judged queries

    fraction = load_study_config(write_study(tmp_path, "fraction", extra="heldout_fraction = 0.3"))
    assert heldout_mode(fraction, 35) == "split"
    assert study_splits(fraction, adi).heldout.name == "test-heldout"
    named = load_study_config(write_study(tmp_path, "named", extra='heldout = "split"'))
    assert heldout_mode(named, 35) == "split"
    forced = load_study_config(write_study(tmp_path, "forced", extra='heldout = "kfold"'))
    assert heldout_mode(forced, 10 * KFOLD_BELOW) == "kfold"

    demo = load_study_config(Path(__file__).resolve().parents[2] / "studies" / "demo.toml")
    assert heldout_mode(demo, 150) == "split"  # names heldout_split: keeps its fixed split


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('heldout = "kfold"\nheldout_split = "train"', "heldout_split"),
        ('heldout = "folds"', "heldout"),
        ("folds = 1", "folds"),
        ("baseline_trials = 0", "baseline_trials"),
        ('baselines = "best"', "baselines"),
    ],
)
def test_contradictory_holdout_settings_are_config_errors(tmp_path, extra, key):
    with pytest.raises(ConfigError, match=key):
        load_study_config(write_study(tmp_path, "bad", extra=extra))


def test_tiny_folds_and_tiny_splits_get_a_warning(tmp_path, adi):
    five = study_splits(load_study_config(write_study(tmp_path, "five")), adi)
    [warning] = five.warnings()
    assert warning.startswith("WARNING") and "7 held-out queries in the smallest fold" in warning
    assert f"fewer than {MIN_QUERIES_PER_FOLD}" in warning

    three = study_splits(load_study_config(write_study(tmp_path, "three", extra="folds = 3")), adi)
    assert min(len(fold.heldout.queries) for fold in three.folds) >= MIN_QUERIES_PER_FOLD
    assert three.warnings() == []

    small_split = study_splits(load_study_config(write_study(tmp_path, "split", extra="heldout_fraction = 0.2")), adi)
    [warning] = small_split.warnings()
    assert "held-out split 'test-heldout' has 7 judged queries" in warning


# --- a k-fold study, end to end -------------------------------------------------------------


def test_no_fold_study_searched_its_own_heldout_queries(kfold, adi):
    splits = kfold.session.splits
    for fold in splits.folds:
        searched = kfold.searches.by_study[(fold.number, None)]
        assert searched == set(fold.tune.queries)
        assert not searched & set(fold.heldout.queries)
    assert kfold.searches.by_study[(None, None)] == set(adi.judged_queries("test"))  # the final study
    assert set(kfold.searches.by_study) == {(None, None), *((fold.number, None) for fold in splits.folds)}


def test_every_judged_query_gets_one_score_from_its_folds_choice(kfold, adi):
    crossval = kfold.verdict.crossval
    report = kfold.verdict.heldout
    judged = set(adi.judged_queries("test"))
    assert report.num_queries == len(judged) and report.folds == 5
    for system in ("tuned", "bm25", "dense"):
        assert set(report.evaluations[system].per_query["nDCG@10"]) == judged
    assert sum(choice.heldout_queries for choice in crossval.folds) == len(judged)
    tuned = report.evaluations["tuned"].per_query["nDCG@10"]
    for fold, choice in zip(kfold.session.splits.folds, crossval.folds):
        alone = evaluate(
            Pipeline(choice.config, kfold.session.resources).search(fold.heldout.queries).run,
            fold.heldout.qrels,
            ("nDCG@10",),
        )
        assert alone.per_query["nDCG@10"] == {qid: tuned[qid] for qid in fold.heldout.queries}
        assert choice.heldout_value == pytest.approx(alone.means["nDCG@10"])


def test_run_prints_per_fold_choices_and_the_verdict_over_all_queries(kfold):
    output = kfold.output
    assert "5-fold cross-validation over 35 judged queries" in output
    assert "cross-validation: what each fold chose (nDCG@10)" in output
    assert "5-fold cross-validation over 'test' (35 queries, each held out once)" in output
    assert "Holm" in output and "the 5 folds chose" in output
    assert "7 held-out queries in the smallest fold" in output  # the tiny-fold warning, beside the verdict
    verdict = kfold.verdict.heldout.verdict()
    assert verdict.split("(")[0] in output


def test_export_report_and_mlflow_carry_the_cross_validated_figures(kfold):
    from stores import mlflow_runs

    provenance = kfold.provenance
    assert provenance["heldout_mode"] == "kfold"
    heldout, crossval = provenance["heldout"], provenance["crossval"]
    assert heldout["folds"] == 5 and heldout["num_queries"] == 35
    comparison = heldout["vs_baselines"]["bm25"]["nDCG@10"]
    assert comparison["p_value"] <= comparison["p_corrected"] <= 1.0
    assert [row["fold"] for row in crossval["per_fold"]] == [1, 2, 3, 4, 5]
    assert crossval["estimate"]["mean"] == heldout["systems"]["tuned"]["nDCG@10"]["mean"]
    assert 1 <= crossval["distinct_configs"] <= 5
    assert "Cross-validation: what each fold chose" in kfold.page and "Holm" in kfold.page
    folds = folds_view(kfold.verdict.crossval)  # the terminal's table, so the same headers and rows
    assert all(f"<th>{header}</th>" in kfold.page for header in folds.headers)
    assert all(f"<td>{choice}</td>" in kfold.page for choice in (row[6] for row in folds.rows))
    above = kfold.verdict.heldout.baseline_above_tuned  # the export follows the cross-validated verdict
    assert provenance["exported"] == (above or "tuned")
    if above:
        assert kfold.verdict.baseline_config == kfold.session.baselines()[above]
        assert provenance["export_reason"].startswith(f"exported baseline '{above}-only'")
        assert "its cross-validated nDCG@10" in provenance["export_reason"]

    saved = json.loads((kfold.session.locations.output_dir / "heldout.json").read_text())
    assert saved == kfold.verdict.heldout.to_dict()
    _, parent, _ = mlflow_runs(kfold.session.locations.tracking_uri, "cv")
    metrics, tags = parent.data.metrics, parent.data.tags
    assert metrics["heldout_folds"] == 5
    assert metrics["heldout_p_holm_vs_bm25_ndcg_at_10"] >= metrics["heldout_p_vs_bm25_ndcg_at_10"]
    for fold in range(1, 6):
        assert f"cv_fold_{fold}_heldout_ndcg_at_10" in metrics and f"workbench.cv.fold_{fold}" in tags
    assert parent.data.params["heldout"] == "kfold"


def test_same_seed_same_folds_same_verdict(kfold, tmp_path, session_cache, mlflow_template):
    state = make_state(tmp_path, session_cache, mlflow_template)
    outcome = run_study(kfold.config, state, show_progress=False)
    again = StudySession(kfold.config, state).judge(outcome.study, outcome.study.best_trial)
    assert again.heldout.to_dict() == kfold.verdict.heldout.to_dict()
    assert again.crossval.to_dict() == kfold.verdict.crossval.to_dict()


def test_changing_the_folds_of_a_finished_study_is_refused(kfold, tmp_path):
    reseeded = kfold.path.read_text().replace("seed = 7", "seed = 8")
    path = tmp_path / "cv.toml"
    path.write_text(reseeded)
    with pytest.raises(StudyError, match="tuned on other queries"):
        run_study(load_study_config(path), kfold.state, show_progress=False)


# --- tuned baselines ------------------------------------------------------------------------


def test_tuned_baselines_are_searched_inside_the_same_folds(tmp_path, session_cache, mlflow_template):
    state = make_state(tmp_path, session_cache, mlflow_template)
    path = write_study(tmp_path, "tb", 'folds = 3\nbaselines = "tuned"\nbaseline_trials = 2', n_trials=3)
    output, searches = run_recorded(["run", str(path), "--state-dir", str(state)])
    config = load_study_config(path)
    session = StudySession(config, state)

    names = [nested.name for nested in nested_studies(config, session.splits, config.n_trials)]
    assert names == [f"tb-fold-{k}{suffix}" for k in (1, 2, 3) for suffix in ("", "-bm25", "-dense")]
    for fold in session.splits.folds:
        for baseline in (None, "bm25", "dense"):
            searched = searches.by_study[(fold.number, baseline)]
            assert searched == set(fold.tune.queries), (fold.number, baseline)
    verdict = session.verdict()
    report = verdict.heldout
    assert report.tuned_baselines and [row.label for row in report.rows()] == [
        "tuned",
        "bm25-only, tuned",
        "dense-only, tuned",
    ]
    assert set(verdict.crossval.baseline_folds) == {"bm25", "dense"}
    for baseline, choices in verdict.crossval.baseline_folds.items():
        assert [choice.fold for choice in choices] == [1, 2, 3]
        # exported if it beat the tuned pipeline: the fold's choice that scores best on every judged query
        chosen, value = tuned_baseline_for_export(config, session.splits, session.resources, choices)
        tune = session.splits.tune
        for choice in choices:
            run = Pipeline(choice.config, session.resources).search(tune.queries).run
            assert evaluate(run, tune.qrels, ["nDCG@10"]).means["nDCG@10"] <= value
        if report.baseline_above_tuned == baseline:
            assert verdict.baseline_config == chosen.config
    assert "bm25-only, tuned" in output


def test_tuned_baselines_with_a_fixed_split(tmp_path, session_cache, mlflow_template):
    state = make_state(tmp_path, session_cache, mlflow_template)
    path = write_study(tmp_path, "tbs", 'heldout = "split"\nbaselines = "tuned"\nbaseline_trials = 2', n_trials=3)
    outcome = run_study(load_study_config(path), state, show_progress=False)
    names = [nested.name for nested in nested_studies(outcome.session.config, outcome.session.splits, 3)]
    assert names == ["tbs-bm25", "tbs-dense"]
    report = outcome.session.verdict().heldout
    assert report.folds == 0 and report.tuned_baselines
    assert set(report.comparisons) == {"bm25", "dense"}
    assert report.num_queries == len(outcome.session.splits.heldout.queries)
    assert not [warning for warning in report.warnings if "tbs-" in warning]

    bm25_search = nested_studies(outcome.session.config, outcome.session.splits, 3)[0].config
    load_optuna_study(bm25_search, outcome.session.locations).set_user_attr(TARGET_ATTR, 5)  # as if stopped at 2 of 5
    warnings = outcome.session.verdict().heldout.warnings
    short = "WARNING: study 'tbs-bm25' has 2 of its 5 trials: run `workbench run` again to finish it"
    assert warnings == (*report.warnings, short)
