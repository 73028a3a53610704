"""Running studies on ADI: baselines first, held-out queries untouched, resumable after Ctrl-C,
failed trials recorded, and one MLflow parent run with a child run per trial.

Real Optuna, MLflow (sqlite), bm25s and faiss throughout. Every study gets its own state folder;
two things are shared to keep the suite fast: an MLflow store whose schema is already migrated
(copied into each state folder) and the session's embedding cache (linked as the state's cache).
"""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import stores
from gates import TrialGate
from stores import BM25_OR_HYBRID, link_test_stores, mlflow_runs
from typer.testing import CliRunner

import workbench.study.objective
from workbench.cli import app
from workbench.errors import ModelError
from workbench.provenance import code_version
from workbench.retrieval.config import load_pipeline_config, read_toml
from workbench.retrieval.pipeline import Pipeline, Resources
from workbench.study.attributes import BASELINE_ATTR, EXPORTED_TAG, FAIL_ATTR, METRICS_ATTR, WORSE_ATTR
from workbench.study.config import load_study_config
from workbench.study.export import choose_trial
from workbench.study.objective import Objective, trial_config
from workbench.study.optuna_study import enqueue_baselines, load_optuna_study, study_locations
from workbench.study.runner import run_study
from workbench.study.space import baseline_config
from workbench.study.splits import study_splits

COMPLETE = optuna.trial.TrialState.COMPLETE
FAIL = optuna.trial.TrialState.FAIL


BM25_ONLY = """
[space.fusion]
method = "bm25"
[space.bm25]
k1 = { low = 0.5, high = 2.0 }
"""

TRIAL_METRICS = {"ndcg_at_10", "recall_at_100", "latency_p50_ms", "latency_p95_ms", "index_build_s", "encoding_s"}
TRIAL_TAGS = {
    "workbench.study",
    "workbench.trial_number",
    "workbench.state",
    "workbench.baseline",
    "workbench.worse_than_baseline",
    "workbench.corpus_fingerprint",
    "workbench.code_version",
}


write_study = functools.partial(stores.write_study, space=BM25_OR_HYBRID, seed=5)


def make_state(folder: Path, session_cache, mlflow_template: Path) -> Path:
    """Returns a fresh state folder: its own stores, the session's embedding cache."""
    state = folder / "state"
    state.mkdir()
    link_test_stores(state, session_cache, mlflow_template)
    return state


def complete_trials(study) -> list:
    return study.get_trials(deepcopy=False, states=(COMPLETE,))


def trial_record(trial) -> tuple:
    return trial.number, trial.values, trial.params, trial.user_attrs


# --- one small study run through the CLI, shared by the checks below -------------------------


@pytest.fixture(scope="module")
def cli_study(tmp_path_factory, session_cache, mlflow_template):
    folder = tmp_path_factory.mktemp("cli-study")
    state = make_state(folder, session_cache, mlflow_template)
    path = write_study(folder, "tree", 6)
    result = CliRunner().invoke(
        app, ["run", str(path), "--state-dir", str(state)], env={"COLUMNS": "200"}, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    config = load_study_config(path)
    locations = study_locations(config, state)
    study = load_optuna_study(config, locations)
    client, parent, children = mlflow_runs(locations.tracking_uri, config.name)
    return SimpleNamespace(
        config=config,
        state=state,
        locations=locations,
        study=study,
        trials=sorted(study.trials, key=lambda trial: trial.number),
        output=result.output,
        client=client,
        parent=parent,
        children=children,
    )


def test_the_baselines_are_enqueued_first(cli_study):
    trials, config = cli_study.trials, cli_study.config

    assert [trial.user_attrs.get(BASELINE_ATTR) for trial in trials[:2]] == ["bm25", "dense"]
    for trial in trials[:2]:
        baseline = trial.user_attrs[BASELINE_ATTR]
        assert trial.params == {}  # nothing sampled for a baseline
        assert trial_config(trial) == baseline_config(baseline, config.space, f"{config.name}-trial-{trial.number}")
    for trial in trials[2:]:
        assert BASELINE_ATTR not in trial.user_attrs
        config_of_trial = trial_config(trial)
        used = "+".join(retriever.name for retriever in config_of_trial.retrievers)
        assert trial.params.get("retrievers", "bm25") == used  # a space of one combination never asks
        if len(config_of_trial.retrievers) > 1:  # asked only when the space lists two methods
            assert config_of_trial.fusion.method == trial.params.get("fusion.method", "convex")


def test_the_study_finishes_its_trials(cli_study):
    assert [trial.state for trial in cli_study.trials] == [COMPLETE] * cli_study.config.n_trials


def test_worse_than_baseline_is_judged_against_the_best_baseline(cli_study):
    trials = cli_study.trials
    best_baseline = max(trial.values[0] for trial in trials if trial.user_attrs.get(BASELINE_ATTR))

    flags = {}
    for trial in trials:
        expected = BASELINE_ATTR not in trial.user_attrs and trial.values[0] < best_baseline
        assert trial.user_attrs[WORSE_ATTR] is expected, f"trial {trial.number}"
        flags[trial.number] = expected
    assert ("worse than baseline" in cli_study.output) == any(flags.values())


def test_a_trials_value_is_its_recorded_tuning_metric(cli_study):
    for trial in cli_study.trials:
        metrics = trial.user_attrs[METRICS_ATTR]
        assert metrics["ndcg_at_10"] == trial.values[0]
        assert 0.0 <= metrics["recall_at_100"] <= 1.0


def test_mlflow_has_one_parent_and_a_child_per_trial(cli_study):
    parent, children = cli_study.parent, cli_study.children

    assert set(children) == {trial.number for trial in cli_study.trials}
    assert parent.data.tags["workbench.study"] == cli_study.config.name
    assert cli_study.client.get_run(parent.info.run_id).info.status == "FINISHED"  # closed at the end
    for run in children.values():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["workbench.role"] == "trial"
        assert run.info.status == "FINISHED"


def test_child_runs_carry_the_trial_metrics_without_at_signs(cli_study):
    for trial in cli_study.trials:
        metrics = cli_study.children[trial.number].data.metrics
        assert TRIAL_METRICS <= metrics.keys()
        assert not [name for name in metrics if "@" in name]
        assert metrics["ndcg_at_10"] == trial.values[0]
        assert metrics["recall_at_100"] == trial.user_attrs[METRICS_ATTR]["recall_at_100"]
        assert metrics["latency_p95_ms"] >= metrics["latency_p50_ms"] > 0


def test_child_run_params_are_the_sampled_params(cli_study):
    for trial in cli_study.trials:
        params = cli_study.children[trial.number].data.params
        baseline = trial.user_attrs.get(BASELINE_ATTR)
        if baseline:
            assert params == {"baseline": baseline}
        else:
            assert params == {key: str(value) for key, value in trial.params.items()}


def test_child_run_tags_describe_the_trial(cli_study):
    fingerprint = load_corpus_fingerprint(cli_study.config.corpus)
    for trial in cli_study.trials:
        tags = cli_study.children[trial.number].data.tags
        assert TRIAL_TAGS <= tags.keys()
        assert tags["workbench.study"] == cli_study.config.name
        assert tags["workbench.trial_number"] == str(trial.number)
        assert tags["workbench.state"] == "COMPLETE"
        assert tags["workbench.baseline"] == (trial.user_attrs.get(BASELINE_ATTR) or "none")
        assert tags["workbench.worse_than_baseline"] == str(trial.user_attrs[WORSE_ATTR]).lower()
        assert tags["workbench.corpus_fingerprint"] == fingerprint
        assert tags["workbench.code_version"] == code_version()


def load_corpus_fingerprint(path: Path) -> str:
    from workbench.retrieval.corpus import load_corpus

    return load_corpus(path).fingerprint


def test_each_child_run_has_its_trials_config_as_an_artifact(cli_study, tmp_path):
    client = cli_study.client
    for trial in cli_study.trials:
        run_id = cli_study.children[trial.number].info.run_id
        name = f"trial-{trial.number}.toml"
        assert [artifact.path for artifact in client.list_artifacts(run_id)] == [name]
        local = client.download_artifacts(run_id, name, str(tmp_path))
        assert load_pipeline_config(local) == trial_config(trial)


def test_the_parent_run_holds_the_best_config_and_the_plots(cli_study, tmp_path):
    client, parent = cli_study.client, cli_study.parent
    artifacts = {artifact.path for artifact in client.list_artifacts(parent.info.run_id)}

    assert {"best.toml", "optimization_history.html"} <= artifacts
    best = choose_trial(cli_study.study)
    local = client.download_artifacts(parent.info.run_id, "best.toml", str(tmp_path))
    exported = read_toml(local)["provenance"]["exported"]  # the pick, or the baseline its verdict puts above it
    expected = trial_config(best) if exported == "tuned" else baseline_config(exported, cli_study.config.space, "")
    assert load_pipeline_config(local).model_copy(update={"name": ""}) == expected.model_copy(update={"name": ""})
    assert parent.data.tags[EXPORTED_TAG] == exported
    metrics = client.get_run(parent.info.run_id).data.metrics
    assert metrics["best_trial"] == best.number
    assert metrics["best_value"] == best.values[0]


def test_the_parent_run_records_the_split_sizes(cli_study, adi):
    splits = study_splits(cli_study.config, adi)
    params = cli_study.parent.data.params

    assert params["tune_queries"] == str(len(splits.tune.queries))
    assert params["heldout_queries"] == str(len(splits.heldout.queries))
    assert params["heldout_split"] == splits.heldout.name


# --- held-out queries -------------------------------------------------------------------------


def test_a_single_split_study_carves_out_disjoint_held_out_queries(adi, tmp_path):
    config = load_study_config(write_study(tmp_path, "carve", 3))
    judged = set(adi.judged_queries("test"))

    splits = study_splits(config, adi)

    tune, held = set(splits.tune.queries), set(splits.heldout.queries)
    assert tune and held
    assert not tune & held
    assert tune | held == judged
    assert len(held) == round(config.heldout_fraction * len(judged))
    assert set(splits.tune.qrels) == tune and set(splits.heldout.qrels) == held
    assert set(study_splits(config, adi).heldout.queries) == held  # seeded: the same every time


def test_trials_search_and_score_only_tuning_queries(adi, session_cache, tmp_path, monkeypatch):
    config = load_study_config(write_study(tmp_path, "spy", 3, space=BM25_ONLY))
    splits = study_splits(config, adi)
    searched: set[str] = set()

    class RecordingPipeline(Pipeline):  # the real pipeline, remembering which queries it was given
        def search(self, queries):
            searched.update(queries)
            return super().search(queries)

    monkeypatch.setattr(workbench.study.objective, "Pipeline", RecordingPipeline)
    objective = Objective(config, splits.tune, Resources(adi, session_cache), tracker=None, output_dir=tmp_path)
    assert objective.queries.keys() == splits.tune.queries.keys()
    assert objective.qrels.keys() == splits.tune.qrels.keys()

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({}, user_attrs={BASELINE_ATTR: "bm25"})
    study.optimize(objective, n_trials=3)

    assert [trial.state for trial in study.trials] == [COMPLETE] * 3
    assert searched == set(splits.tune.queries)
    assert not searched & set(splits.heldout.queries)


# --- resuming, interruption, failures --------------------------------------------------------


def test_a_study_resumes_up_to_the_requested_trials(tmp_path, session_cache, mlflow_template):
    state = make_state(tmp_path, session_cache, mlflow_template)
    config = load_study_config(write_study(tmp_path, "resume", 3))

    first = run_study(config, state, n_trials=3, show_progress=False)
    before = [trial_record(trial) for trial in complete_trials(first.study)]
    second = run_study(config, state, n_trials=5, show_progress=False)

    assert len(before) == 3
    after = complete_trials(second.study)
    assert len(after) == 5 and len(second.study.trials) == 5
    assert [trial_record(trial) for trial in after[:3]] == before
    assert [trial.user_attrs.get(BASELINE_ATTR) for trial in after].count("dense") == 1  # not queued again
    _, _, children = mlflow_runs(second.session.locations.tracking_uri, config.name)
    assert sorted(children) == [0, 1, 2, 3, 4]

    third = run_study(config, state, n_trials=5, show_progress=False)
    assert len(third.study.trials) == 5  # already there: nothing runs


def test_a_study_sampled_with_the_two_stage_parameter_names_is_not_resumed(tmp_path, session_cache, mlflow_template):
    from optuna.distributions import FloatDistribution
    from typer.testing import CliRunner

    from workbench.cli import app
    from workbench.study.storage import open_storage

    state = make_state(tmp_path, session_cache, mlflow_template)
    path = write_study(tmp_path, "old-names", 3)
    config = load_study_config(path)
    locations = study_locations(config, state)
    # What an older workbench stored: the two-stage sampler's parameter names.
    storage = open_storage(locations.storage_url, config.heartbeat_s, None)
    old = optuna.create_study(study_name=config.name, storage=storage, direction="maximize")
    old.add_trial(
        optuna.trial.create_trial(
            params={"fusion.method": "bm25", "bm25.k1": 1.2},
            distributions={
                "fusion.method": optuna.distributions.CategoricalDistribution(["bm25", "convex"]),
                "bm25.k1": FloatDistribution(0.5, 2.0),
            },
            value=0.5,
        )
    )

    result = CliRunner().invoke(app, ["run", str(path), "--state-dir", str(state)], env={"COLUMNS": "300"})

    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "older workbench (bm25.k1)" in lines[0] and "new name" in lines[0], result.output
    assert len(load_optuna_study(config, locations).trials) == 1  # nothing ran; reading it still works


def test_a_failed_baseline_is_queued_again_on_resume():
    study = optuna.create_study(direction="maximize")
    assert enqueue_baselines(study) == ["bm25", "dense"]
    assert enqueue_baselines(study) == []  # both waiting

    interrupted = study.ask()
    assert interrupted.user_attrs[BASELINE_ATTR] == "bm25"
    study.tell(interrupted, state=FAIL)

    assert enqueue_baselines(study) == ["bm25"]


def test_a_model_that_cannot_load_stops_the_study_before_any_trial(tmp_path, session_cache, mlflow_template):
    space = """
[space.dense]
model = ["org/does-not-exist"]
[space.fusion]
method = ["bm25", "dense"]
"""
    state = make_state(tmp_path, session_cache, mlflow_template)
    config = load_study_config(write_study(tmp_path, "broken-model", 5, space=space))

    with pytest.raises(ModelError, match=r"space\.dense\.model: cannot load model 'org/does-not-exist'"):
        run_study(config, state, show_progress=False)

    assert not (state / "optuna.journal").exists()  # no trial was started


def test_a_trial_whose_model_stops_loading_fails_with_a_reason_and_the_study_goes_on(
    tmp_path, session_cache, mlflow_template, monkeypatch
):
    class ModelGoneMidStudy(Pipeline):
        """The dense model loaded when the study started, and fails in every trial that needs it."""

        def __init__(self, config, resources):
            if dense := config.first_stage("dense"):
                model = dense.model
                raise ModelError(f"cannot load model '{model}': its folder was removed", model)
            super().__init__(config, resources)

    monkeypatch.setattr(workbench.study.objective, "Pipeline", ModelGoneMidStudy)
    space = """
[space.fusion]
method = ["bm25", "dense"]
[space.bm25]
k1 = { low = 0.5, high = 2.0 }
"""
    state = make_state(tmp_path, session_cache, mlflow_template)
    # seed 8: the random sampler picks dense, bm25, dense after the two baselines
    config = load_study_config(write_study(tmp_path, "broken-model", 5, space=space, seed=8))

    outcome = run_study(config, state, show_progress=False)

    trials = sorted(outcome.study.trials, key=lambda trial: trial.number)
    assert len(trials) == 5  # every trial was attempted
    assert trials[1].user_attrs[BASELINE_ATTR] == "dense" and trials[1].state == FAIL
    for trial in trials:
        if [retriever.kind for retriever in trial_config(trial).retrievers] == ["dense"]:
            assert trial.state == FAIL
            assert "all-MiniLM-L6-v2" in trial.user_attrs[FAIL_ATTR]
            assert trial.user_attrs[FAIL_ATTR].startswith("ModelError")
        else:
            assert trial.state == COMPLETE
    assert [trial for trial in trials if trial.state == FAIL and BASELINE_ATTR not in trial.user_attrs]
    assert [trial for trial in trials if trial.state == COMPLETE and trial.number > 1]  # went on after failures
    logged = outcome.session.locations.log_file.read_text()
    assert logged.count("Traceback (most recent call last)") == sum(trial.state == FAIL for trial in trials)

    _, _, children = mlflow_runs(outcome.session.locations.tracking_uri, config.name)
    for trial in trials:
        run = children[trial.number]
        if trial.state == FAIL:
            assert run.info.status == "FAILED"
            assert run.data.tags["workbench.state"] == "FAIL"
            assert "all-MiniLM-L6-v2" in run.data.tags[FAIL_ATTR]
            assert run.data.metrics == {}
        else:
            assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_an_interrupted_run_resumes_keeping_its_finished_trials(tmp_path, session_cache, mlflow_template):
    state = make_state(tmp_path, session_cache, mlflow_template)
    path = write_study(tmp_path, "interrupted", 4, extra="heldout_fraction = 0.0")
    command = [sys.executable, "-m", "workbench.cli", "run", str(path), "--state-dir", str(state)]
    gate = TrialGate(tmp_path / "gate", trials=[1])  # trial 1, the dense baseline, blocks until interrupted
    log = tmp_path / "first-run.log"

    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path, env=gate.environment()
        )
        try:
            gate.wait_until_inside(1, process, log)
            process.send_signal(signal.SIGINT)
            returncode = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert returncode == 130, log.read_text()
    assert "interrupted" in log.read_text()
    config = load_study_config(path)
    locations = study_locations(config, state)
    study = load_optuna_study(config, locations)
    before = [trial_record(trial) for trial in complete_trials(study)]
    assert before and before[0][0] == 0
    earlier, interrupted = study.trials
    assert earlier.state == COMPLETE and interrupted.number == 1
    assert interrupted.state == FAIL and interrupted.user_attrs[FAIL_ATTR].startswith("KeyboardInterrupt")

    rerun = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    study = load_optuna_study(config, locations)
    after = complete_trials(study)
    assert len(after) == config.n_trials
    assert [trial_record(trial) for trial in after[: len(before)]] == before
    assert {"bm25", "dense"} <= {trial.user_attrs.get(BASELINE_ATTR) for trial in after}
    _, parent, children = mlflow_runs(locations.tracking_uri, config.name)
    assert sorted(children) == sorted(trial.number for trial in study.trials)
    assert children[interrupted.number].info.status in ("FAILED", "FINISHED")  # none left RUNNING by Ctrl-C
    assert parent.info.status == "FINISHED"  # reopened by the resume, closed at its end
    assert all(children[trial.number].info.status == "FINISHED" for trial in after)
