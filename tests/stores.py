"""Study files and fresh state folders for tests (sharing the slow parts between them), and readers of a study's stores."""

from __future__ import annotations

import shutil
from pathlib import Path

ADI = Path(__file__).resolve().parent.parent / "corpora" / "adi"

# BM25 alone or fused with MiniLM, with k1 and b: the space most study tests search.
BM25_OR_HYBRID = """
[space.fusion]
method = ["bm25", "convex"]
alpha = { low = 0.0, high = 1.0 }
[space.bm25]
k1 = { low = 0.5, high = 2.0 }
b = { low = 0.3, high = 1.0 }
"""


def write_study(
    folder: Path,
    name: str,
    n_trials: int,
    space: str,
    *,
    seed: int = 5,
    latency_sample: int = 3,
    extra: str = "",
    corpus: Path = ADI,
    heldout: str = "split",
) -> Path:
    """Writes ``folder/<name>.toml``: a random-sampler study over the corpus' single "test" split
    (with ``heldout = "split"``, 30% of its queries are carved out as held-out), with ``extra``
    top-level keys and ``space``."""
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\ncorpus = "{corpus}"\ntune_split = "test"\nheldout = "{heldout}"\nn_trials = {n_trials}\n'
        f'sampler = "random"\nseed = {seed}\nlatency_sample = {latency_sample}\n{extra}\n{space}'
    )
    return path


def invoke_ok(*args):
    """Runs ``workbench ARGS`` in this process (Typer's CliRunner, wide terminal); asserts it exits 0."""
    from typer.testing import CliRunner

    from workbench.cli import app

    result = CliRunner().invoke(app, [str(arg) for arg in args], env={"COLUMNS": "200"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def linked_state(folder: Path, session_cache, mlflow_template: Path) -> Path:
    """Returns ``folder/state``, made and given the shared test stores (``link_test_stores``)."""
    state = folder / "state"
    state.mkdir()
    link_test_stores(state, session_cache, mlflow_template)
    return state


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
