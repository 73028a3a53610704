"""MLflow logging of studies: one parent run per study, one child run per trial.

The only module that imports mlflow. Runs are created through ``MlflowClient`` with explicit
ids, so no global "active run" state leaks between trials or workers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.errors import EnvironmentFault
from workbench.files import file_lock
from workbench.study.attributes import FAIL_ATTR, ROLE_TAG, STATE_TAG, STUDY_TAG, TRIAL_NUMBER_TAG

PARENT_ROLE = "study"
TRIAL_ROLE = "trial"


def sqlite_uri(path: Path) -> str:
    """Returns the ``sqlite:///`` tracking URI of an absolute database path."""
    return f"sqlite:///{path.resolve()}"


PROBE_TIMEOUT_S = 5.0


def _store_lock(tracking_uri: str):
    """Returns a lock beside a sqlite store (``<db>.lock``), or a no-op for a server that serialises itself."""
    if not tracking_uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    return file_lock(Path(f"{tracking_uri.removeprefix('sqlite:///')}.lock"))


def check_tracking_server(tracking_uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raises ``EnvironmentFault`` when an ``http(s)://`` tracking URI has no server answering within ``timeout_s``.

    MLflow's own client retries a dead server for minutes before it fails; one short request says
    at once. Any HTTP answer counts as alive (the server decides what it serves); other schemes pass.
    """
    import http.client
    import urllib.error
    import urllib.request

    if not tracking_uri.startswith(("http://", "https://")):
        return
    probe = f"{tracking_uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(probe, timeout=timeout_s):  # noqa: S310 (only http(s) reaches here)
            pass
    except urllib.error.HTTPError:
        return  # it answered
    except (OSError, ValueError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        raise EnvironmentFault(
            f"tracking URI {tracking_uri}: no MLflow server answers ({reason}); start it, "
            "or leave --tracking-uri out to log into the state folder's store"
        ) from None


class StudyTracker:
    """Logs one study into an MLflow experiment named after it."""

    def __init__(self, tracking_uri: str, study_name: str, artifact_root: Path | None = None):
        import logging

        from mlflow.tracking import MlflowClient

        # One "View run … at" line per trial on an HTTP store would break the progress bar.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        # mlflow sets its own log level on import; store migrations would otherwise print INFO lines.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)

        check_tracking_server(tracking_uri)
        self.tracking_uri = tracking_uri
        self.study_name = study_name
        # Two first runs on a fresh state folder would both create (migrate) the sqlite store and the
        # experiment: one process does it while the other waits, then finds them made.
        with _store_lock(tracking_uri):
            self.client = MlflowClient(tracking_uri=tracking_uri)
            experiment = self.client.get_experiment_by_name(study_name)
            if experiment is None:
                location = artifact_root.resolve().as_uri() if artifact_root is not None else None
                # The experiment kind makes the MLflow UI open on its run table, not the GenAI overview.
                self.experiment_id = self.client.create_experiment(
                    study_name,
                    artifact_location=location,
                    tags={"mlflow.experimentKind": "custom_model_development", STUDY_TAG: study_name},
                )
            else:
                self.experiment_id = experiment.experiment_id
            self.parent_run_id = self._find_or_create_parent()

    def _find_or_create_parent(self) -> str:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = '{PARENT_ROLE}'",
            max_results=1,
        )
        if runs:
            return runs[0].info.run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.study_name,
            tags={ROLE_TAG: PARENT_ROLE, STUDY_TAG: self.study_name},
        )
        return run.info.run_id

    def log_study_settings(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """Records the study's settings on the parent run (params are written once)."""
        from mlflow.entities import Param, RunTag

        existing = self.client.get_run(self.parent_run_id).data.params
        new_params = [Param(key, str(value)) for key, value in params.items() if key not in existing]
        self.client.log_batch(
            self.parent_run_id, params=new_params, tags=[RunTag(key, str(value)) for key, value in tags.items()]
        )

    def start_trial(self, trial_number: int, tags: Mapping[str, str]) -> str:
        """Returns the id of a new child run for a trial, marked running."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{trial_number}",
            tags={
                "mlflow.parentRunId": self.parent_run_id,
                ROLE_TAG: TRIAL_ROLE,
                STUDY_TAG: self.study_name,
                TRIAL_NUMBER_TAG: str(trial_number),
                STATE_TAG: "RUNNING",
                **tags,
            },
        )
        return run.info.run_id

    def finish_trial(
        self,
        run_id: str,
        state: str,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        artifacts: list[Path] = (),
    ) -> None:
        """Logs a trial's params, metrics, tags and files, then closes its run (FINISHED, KILLED if pruned, or FAILED)."""
        import time

        from mlflow.entities import Metric, Param, RunTag

        timestamp = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(key, float(value), timestamp, 0) for key, value in (metrics or {}).items()],
            params=[Param(key, str(value)) for key, value in (params or {}).items()],
            tags=[RunTag(key, str(value)) for key, value in {**(tags or {}), STATE_TAG: state}.items()],
        )
        for path in artifacts:
            self.client.log_artifact(run_id, str(path))
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        self.client.set_terminated(run_id, status=status)

    def fail_orphaned_trial(self, run_id: str, reason: str) -> None:
        """Closes the run of a trial whose worker died: FAILED, with the reason as a tag."""
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(STATE_TAG, "FAIL"), RunTag(FAIL_ATTR, reason[:5000])])
        self.client.set_terminated(run_id, status="FAILED")

    def fail_running_trials(self, worker: str, reason: str) -> int:
        """Closes as FAILED the trial runs of ``worker`` (``host:pid``) still marked running; returns how many.

        A worker interrupted between opening a trial's run and its cleanup leaves the run open.
        """
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`workbench.worker` = '{worker}' and attributes.status = 'RUNNING'",
            max_results=1000,
        )
        for run in runs:
            self.fail_orphaned_trial(run.info.run_id, reason)
        return len(runs)

    def log_parent_artifacts(
        self, paths: list[Path], metrics: Mapping[str, float] | None = None, tags: Mapping[str, str] | None = None
    ) -> None:
        """Attaches files (best config, plots, reports), summary metrics and tags to the parent run."""
        import time

        from mlflow.entities import Metric, RunTag

        if metrics or tags:
            timestamp = int(time.time() * 1000)
            self.client.log_batch(
                self.parent_run_id,
                metrics=[Metric(key, float(value), timestamp, 0) for key, value in (metrics or {}).items()],
                tags=[RunTag(key, str(value)) for key, value in (tags or {}).items()],
            )
        for path in paths:
            self.client.log_artifact(self.parent_run_id, str(path))

    def finish_study(self, interrupted: bool) -> None:
        """Closes the parent run: FINISHED, or KILLED when the study was interrupted (a resume reopens it)."""
        self.client.set_terminated(self.parent_run_id, status="KILLED" if interrupted else "FINISHED")

    def reopen_study(self) -> None:
        """Marks the parent run as running again while a resumed study adds trials."""
        self.client.update_run(self.parent_run_id, status="RUNNING")

    def child_runs(self) -> list:
        """Returns the trial runs of this study (MLflow ``Run`` objects)."""
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'",
            max_results=10_000,
        )
