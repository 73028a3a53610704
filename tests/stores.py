"""Fresh study state folders for tests that share the slow parts between them, and readers of a study's stores."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna


def link_test_stores(state: Path, session_cache, mlflow_template: Path) -> None:
    """Gives ``state`` a copy of the pre-migrated MLflow store and the session's embedding cache.

    Each study still gets its own Optuna and MLflow stores; only the content-addressed cache
    (safe to share) and the MLflow schema migrations (seconds per store) are shared.
    """
    shutil.copy(mlflow_template, state / "mlflow.db")
    (state / "cache").symlink_to(session_cache.root, target_is_directory=True)


def mlflow_runs(tracking_uri: str, study_name: str) -> tuple:
    """Returns (client, parent run, child runs by trial number) of a study's MLflow experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(study_name)
    assert experiment is not None, f"no MLflow experiment named {study_name}"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [run for run in runs if run.data.tags.get("workbench.role") == "study"]
    assert len(parents) == 1, f"expected one parent run, found {len(parents)}"
    children = [run for run in runs if run is not parents[0] and run.info.run_id != parents[0].info.run_id]
    by_trial = {int(run.data.tags["workbench.trial_number"]): run for run in children}
    assert len(by_trial) == len(children), "two MLflow runs for one trial"
    return client, parents[0], by_trial


def polled_trials(journal: Path, study_name: str) -> dict[int, tuple[str, set[str]]]:
    """Returns trial number → (state, user-attribute keys), read from the study's journal file.

    A journal is safe to read while the study's own process appends to it.
    """
    if not journal.exists():
        return {}
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        study = optuna.load_study(study_name=study_name, storage=JournalStorage(JournalFileBackend(str(journal))))
    except KeyError:  # not created yet
        return {}
    return {trial.number: (trial.state.name, set(trial.user_attrs)) for trial in study.get_trials(deepcopy=False)}
