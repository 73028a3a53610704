"""Several processes, one study: the worker loop, trials of dead workers, local worker processes.

Optuna's storage coordinates the workers (a journal file on one machine, PostgreSQL across
machines). On top of it workbench keeps three promises:

- exact trial counts: a worker starts a trial only while finished plus running trials fall
  short of the target, and a trial that lost that race to another worker fails at once as surplus;
- nothing lost: a trial whose worker died is failed, its MLflow run closed as FAILED, and it is
  queued once more (found by heartbeats on a database, by the worker's process id on a journal);
- ``workbench run --workers N`` starts N ``workbench worker`` processes and shows one progress
  bar over all of them.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import StudyError
from workbench.files import dead_local_process, file_lock, process_label
from workbench.study.attributes import DUPLICATE_ATTR, EXHAUSTED_ATTR, FAIL_ATTR, MLFLOW_RUN_ATTR, WORKER_ATTR
from workbench.study.storage import is_rdb, journal_path, open_storage

POLL_S = 0.5
MAX_REPEATS = 100  # proposals in a row that repeat a tried configuration before a search gives up


def worker_label(pid: int | None = None) -> str:
    """Returns the name of a process of this machine (default: this one) as recorded on its trials: ``host:pid``."""
    return process_label(pid)


def _dead_local_worker(label: str) -> bool:
    """Returns True when ``label`` names a process of this machine that no longer exists."""
    return dead_local_process(label)


def trial_counts(study) -> tuple[int, int]:
    """Returns (finished, running) trials: finished means complete or pruned."""
    import optuna

    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING))
    running = sum(1 for trial in trials if trial.state == states.RUNNING)
    return len(trials) - running, running


def study_done(study, target: int) -> bool:
    """Returns whether a study needs no more trials: ``target`` finished, or every configuration of its space tried."""
    return trial_counts(study)[0] >= target or bool(study.user_attrs.get(EXHAUSTED_ATTR))


def is_surplus(study, trial_number: int, target: int) -> bool:
    """Returns whether a just-started trial is not needed: enough trials finished or started before it."""
    import optuna

    states = optuna.trial.TrialState
    ahead = 0
    for trial in study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING)):
        if trial.state != states.RUNNING or trial.number < trial_number:
            ahead += 1
    return ahead >= target


class OrphanedTrialHandler:
    """Called with a trial already marked failed because its worker died: closes the trial's
    MLflow run as FAILED and queues the same parameters once more (Optuna's retry callback)."""

    def __init__(self, tracker=None):
        self.tracker = tracker

    def __call__(self, study, trial) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        reason = f"worker {trial.user_attrs.get(WORKER_ATTR, '?')} died during the trial"
        run_id = trial.user_attrs.get(MLFLOW_RUN_ATTR)
        if self.tracker is not None and run_id:
            self.tracker.fail_orphaned_trial(run_id, reason)
        retry = copy.deepcopy(trial)
        retry.user_attrs = {
            key: value
            for key, value in trial.user_attrs.items()
            if key not in (WORKER_ATTR, MLFLOW_RUN_ATTR, FAIL_ATTR)
        }
        RetryHeartbeatStaleTrialCallback(max_retry=1)(study, retry)


def fail_dead_local_trials(study, storage_url: str, on_orphan: OrphanedTrialHandler) -> list[int]:
    """Fails the running trials of dead processes of this machine, on a journal storage; returns their numbers.

    Databases use heartbeats instead. A lock beside the journal makes sure that two workers
    noticing the same death fail (and retry) the trial once. The reason goes on the trial
    through the storage's public methods (a ``Trial`` writes only to its own trial; the study
    does not hand out its storage), on a storage opened again for it, which also sets aside a
    record the dead worker left cut short; the state through ``study.tell``.
    """
    import optuna

    path = journal_path(storage_url)
    if path is None:
        return []
    failed = []
    with file_lock(path.with_name(f"{path.name}.reap.lock")):
        dead = [
            trial
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if _dead_local_worker(trial.user_attrs.get(WORKER_ATTR, ""))
        ]
        if not dead:
            return []
        storage = open_storage(storage_url)
        study_id = storage.get_study_id_from_name(study.study_name)
        for trial in dead:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            reason = f"worker {trial.user_attrs[WORKER_ATTR]} died during the trial"
            storage.set_trial_user_attr(trial_id, FAIL_ATTR, reason)
            on_orphan(study, study.tell(trial.number, state=optuna.trial.TrialState.FAIL))
            failed.append(trial.number)
    return failed


def recover_stale_trials(study, storage_url: str, on_orphan: OrphanedTrialHandler) -> None:
    """Fails (and retries) trials whose worker died: heartbeats on a database, process ids on a journal."""
    if is_rdb(storage_url):
        from optuna.storages import fail_stale_trials

        fail_stale_trials(study)
    else:
        fail_dead_local_trials(study, storage_url, on_orphan)


def work_on_study(
    study,
    objective: Callable,
    target: int,
    storage_url: str,
    on_orphan: OrphanedTrialHandler,
    deadline: float | None = None,
    on_trial_end: Callable[[object, object], None] | None = None,
    exhausted: Callable[[object], str | None] | None = None,
) -> None:
    """Runs trials until the study has ``target`` finished trials or ``deadline`` (epoch seconds) passes.

    Failed trials do not count towards the target, so this worker gives up after as many
    attempts as trials were missing when it started (a rerun resumes). A proposal that repeats
    the parameters of another trial fails without being scored and costs no attempt; when
    ``exhausted(study)`` gives a reason (every configuration of a finite space tried), or
    ``MAX_REPEATS`` proposals in a row were repeats, the reason is recorded on the study
    (``EXHAUSTED_ATTR``) and the work ends. While the missing trials are all running elsewhere,
    it waits: if one of their workers dies, the retry is picked up here. ``on_trial_end(study,
    trial)`` follows each trial this worker ran. `workbench run` clears ``EXHAUSTED_ATTR`` when it
    (re)sets the target, so a changed space is searched again. Ctrl-C raises ``KeyboardInterrupt`` after
    Optuna failed the trial.
    """
    ran: list = []  # the trial this process just ran, as Optuna hands it to callbacks
    callbacks = [lambda study, trial: ran.append(trial)] + ([on_trial_end] if on_trial_end is not None else [])
    finished, _ = trial_counts(study)
    attempts_left = target - finished
    repeats_in_a_row = 0
    with _remembered_interrupts() as interrupted:
        while attempts_left > 0 and (deadline is None or time.time() < deadline):
            if interrupted.is_set():
                raise KeyboardInterrupt("interrupted while a finaliser ran")
            recover_stale_trials(study, storage_url, on_orphan)
            finished, running = trial_counts(study)
            if finished >= target or study.user_attrs.get(EXHAUSTED_ATTR):
                return
            reason = exhausted(study) if exhausted is not None else None
            if reason is None and repeats_in_a_row >= MAX_REPEATS:
                reason = f"the sampler proposed {MAX_REPEATS} configurations in a row that were tried already"
            if reason is not None:
                study.set_user_attr(EXHAUSTED_ATTR, f"{reason}; {finished} of {target} trials finished")
                return
            if finished + running >= target:
                time.sleep(POLL_S)
                continue
            ran.clear()
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks, gc_after_trial=False)
            if ran and ran[-1].state.name == "FAIL" and DUPLICATE_ATTR in ran[-1].user_attrs:
                repeats_in_a_row += 1
            else:
                repeats_in_a_row = 0
                attempts_left -= 1


@contextlib.contextmanager
def _remembered_interrupts():
    """Yields an event set by every Ctrl-C, which still raises ``KeyboardInterrupt`` as usual.

    Python drops a ``KeyboardInterrupt`` raised inside a finaliser (``__del__``); the event
    keeps such an interrupt from being lost, so no further trial starts.
    """
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_interrupt(signum, frame):
        interrupted.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


class TrialProgress:
    """A progress bar over the study's finished trials, with the best value so far, and one line
    per trial that fails from now on (its reason; the traceback is in ``log_path``)."""

    def __init__(
        self,
        target: int,
        metric: str,
        enabled: bool = True,
        study=None,
        log_path: Path | None = None,
        label: str = "trials",
    ):
        from tqdm import tqdm

        self.bar = tqdm(total=target, desc=label, unit="trial", disable=not enabled, dynamic_ncols=True)
        self.metric = metric
        self.log_path = log_path
        self._shown: tuple = ()
        self._failures_told = self._failed_numbers(study) if study is not None else set()

    @staticmethod
    def _failed_numbers(study) -> set[int]:
        import optuna

        return {trial.number for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))}

    def update(self, study) -> None:
        import optuna

        if self.log_path is not None:
            self._tell_failures(study)
        finished, running = trial_counts(study)
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        best = max((trial.values[0] for trial in complete), default=None)
        if (finished, running, best) == self._shown:
            return
        self._shown = (finished, running, best)
        self.bar.n = min(finished, self.bar.total)
        postfix = {"running": running}
        if best is not None:
            postfix[f"best {self.metric}"] = f"{best:.4f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()

    def _tell_failures(self, study) -> None:
        import optuna

        from workbench.study.log import failed_trial_line

        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
            if trial.number in self._failures_told:
                continue
            self._failures_told.add(trial.number)
            reason = trial.user_attrs.get(FAIL_ATTR)
            if reason and reason.startswith(("surplus", "duplicate")):
                continue  # two workers raced for the last trial, or a repeated proposal skipped: nothing went wrong
            self.write(failed_trial_line(trial.number, reason, self.log_path))

    def write(self, message: str) -> None:
        self.bar.write(message)

    def close(self) -> None:
        self.bar.close()


@dataclass
class LocalWorker:
    index: int
    process: subprocess.Popen
    log_path: Path
    reported: bool = False


def start_local_workers(
    count: int,
    study_file: Path,
    state_dir: Path,
    storage_url: str,
    tracking_uri: str,
    log_dir: Path,
    timeout_s: float | None = None,
    cache: str | None = None,
    ray: str | None = None,
) -> list[LocalWorker]:
    """Starts ``count`` ``workbench worker`` processes on this machine, each logging to ``log_dir``,
    with the study's ``cache`` location and ``ray`` cluster when they are set.

    The cores are shared out: each worker's torch gets ``cores // count`` threads (at least one)
    unless ``OMP_NUM_THREADS`` is set already, so N workers do not each spawn a thread per core.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    environment = dict(os.environ)
    environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // count)))
    command = [
        sys.executable, "-m", "workbench.cli", "worker", str(study_file),
        "--storage", storage_url, "--tracking-uri", tracking_uri, "--state-dir", str(state_dir),
    ]  # fmt: skip
    if timeout_s is not None:
        command += ["--timeout", str(timeout_s)]
    command += [*(["--cache", cache] if cache else []), *(["--ray", ray] if ray else [])]
    workers = []
    for index in range(1, count + 1):
        log_path = log_dir / f"worker-{index}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment
            )
        workers.append(LocalWorker(index, process, log_path))
    return workers


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _close_runs_of_stopped_workers(workers: list[LocalWorker], tracker) -> None:
    """Closes the MLflow trial runs that workers which did not end cleanly left open."""
    for worker in workers:
        if tracker is not None and worker.process.returncode not in (None, 0):
            label = worker_label(worker.process.pid)
            tracker.fail_running_trials(label, f"worker {label} stopped with code {worker.process.returncode}")


@dataclass
class FollowedStudy:
    """A study the local workers work on, in turn: the study itself, then its nested studies."""

    study: Any  # optuna.Study
    target: int
    progress: Callable[[], TrialProgress]  # opens its progress bar once the workers reach it


def _follow(followed: list[FollowedStudy], current: int, bar: TrialProgress | None) -> tuple[int, TrialProgress | None]:
    """Moves the progress bar past the studies that have their trials; returns the study shown and its bar."""
    while current < len(followed) and study_done(followed[current].study, followed[current].target):
        if bar is not None:
            bar.update(followed[current].study)
            bar.close()
            bar = None
        current += 1
    if current < len(followed):
        bar = bar or followed[current].progress()
        bar.update(followed[current].study)
    return current, bar


def supervise_local_workers(
    workers: list[LocalWorker],
    followed: list[FollowedStudy],
    storage_url: str,
    on_orphan: OrphanedTrialHandler,
    write: Callable[[str], None],
) -> None:
    """Waits for the workers, showing the progress of the study they are on; fails the trials of a worker that dies.

    Ctrl-C is passed on to the workers (each fails its running trial) before it is re-raised.
    Raises ``StudyError`` when every worker failed, ``KeyboardInterrupt`` when every worker was interrupted.
    """

    def fail_trials_of_dead_workers() -> list[int]:
        return [number for one in followed for number in fail_dead_local_trials(one.study, storage_url, on_orphan)]

    current, bar = 0, None
    try:
        while True:
            for worker in workers:
                code = worker.process.poll()
                if code is None or code == 0 or worker.reported:
                    continue
                worker.reported = True
                failed = fail_trials_of_dead_workers()
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                write(
                    f"worker {worker.index} (pid {worker.process.pid}) stopped with {how}"
                    + (f"; trial(s) {failed} failed and queued again" if failed else "")
                    + f"; log: {worker.log_path}\n{_tail(worker.log_path)}"
                )
            current, bar = _follow(followed, current, bar)
            if all(worker.process.poll() is not None for worker in workers):
                current, bar = _follow(followed, current, bar)  # the trials finished since the last look
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reaches the workers too; a second SIGINT could cut short their
        # cleanup, so only those still running after a grace period get one from here.
        grace_end = time.monotonic() + 5
        while time.monotonic() < grace_end and any(worker.process.poll() is None for worker in workers):
            time.sleep(0.1)
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGINT)
        for worker in workers:
            try:
                worker.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        fail_trials_of_dead_workers()
        _close_runs_of_stopped_workers(workers, on_orphan.tracker)
        raise
    finally:
        if bar is not None:
            bar.close()
    _close_runs_of_stopped_workers(workers, on_orphan.tracker)
    if all(worker.process.returncode in (130, -signal.SIGINT) for worker in workers):
        # Ctrl-C reached the workers, and here too late to interrupt the wait (a busy moment): still an interruption.
        raise KeyboardInterrupt
    if all(worker.process.returncode != 0 for worker in workers):
        raise StudyError(f"every worker failed; see the logs in {workers[0].log_path.parent}")
