"""Hyperparameter search: an Optuna study whose trials are tunesmith training runs.

    tune(config, trials=N)      create the study (or load it), queue N trials, work on them,
                                then write the report (report.py)
    work(study)                 one worker: claim a queued trial, train it, tell the result; repeat

Several workers share one study through its storage (SQLite by default; Postgres/MySQL URLs for
several machines): ``--workers K`` starts K-1 more processes here, and ``tunesmith tune --join
NAME --storage URL`` adds workers anywhere. Trials are queued up front (Optuna WAITING trials) and
each worker claims one with an atomic state change, so N requested trials run exactly once each
whatever the number of workers — ``study.optimize(n_trials=N)`` in K processes would run K×N.
A worker that dies mid-trial stops sending heartbeats; the next worker to look marks that trial
failed and queues it again (Optuna's RetryHeartbeatStaleTrialCallback).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from transformers import TrainerCallback

from tunesmith.config import RecipeConfig, load_config
from tunesmith.errors import TunesmithError
from tunesmith.runs import new_run
from tunesmith.tracking.tracker import write_tracking
from tunesmith.training.recipes import recipe_for
from tunesmith.tuning.space import SearchSpec, with_values
from tunesmith.workspace import Workspace

HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120  # a trial silent for this long belongs to a dead worker


def storage_url(workspace: Workspace, storage: str | None) -> str:
    if storage:
        return storage
    workspace.home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{workspace.studies_db_path}"


def open_storage(url: str):
    """Optuna's RDB storage with heartbeats (so a dead worker's trial is retried) and, for SQLite,
    a long lock timeout: workers write seldom (once per evaluation) but may collide."""
    import optuna

    quiet_optuna()  # heartbeats are an "experimental" argument, which warns on every use
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(
        url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))


def create_study(config: RecipeConfig, spec: SearchSpec, trials: int, url: str, name: str) -> None:
    """Create the study (or extend one of that name made from the same config), remember the
    config and the search space in it, and queue ``trials`` trials."""
    import optuna

    quiet_optuna()
    study = optuna.create_study(study_name=name, storage=open_storage(url), direction=spec.direction,
                                load_if_exists=True)
    dumped = config.model_dump(mode="json")
    if study.user_attrs.get("config") is None:
        study.set_user_attr("config", dumped)
        study.set_user_attr("search", spec.model_dump(mode="json"))
        study.set_user_attr("created_at", time.time())
    elif study.user_attrs["config"] != dumped:
        raise TunesmithError(f"study {name!r} exists with another config; give a new --study name, or "
                             f"--join {name} to work on it as it is")
    for _ in range(trials):
        study.enqueue_trial({}, user_attrs={"queued_at": time.time()})


def load_study(name: str, url: str, worker_index: int) -> tuple[Any, Any, RecipeConfig, SearchSpec]:
    """An existing study with its storage, the config and search space it was created with, and a
    sampler for this worker (its own seed; constant liar, so parallel workers spread out)."""
    import optuna

    quiet_optuna()
    try:
        storage = open_storage(url)
        names = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    except Exception as e:  # noqa: BLE001 — a bad URL or an unreachable database
        raise TunesmithError(f"cannot open the study storage {url}: {e}") from None
    if name not in names:
        raise TunesmithError(f"no study {name!r} in {url}" + (f" (there: {', '.join(sorted(names))})" if names else ""))
    probe = optuna.load_study(study_name=name, storage=storage)
    config = load_config(None, None, base=probe.user_attrs["config"])
    spec = SearchSpec.model_validate(probe.user_attrs["search"])
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler(spec, len(probe.trials), worker_index),
                              pruner=pruner(spec))
    return study, storage, config, spec


def sampler(spec: SearchSpec, trials: int, worker_index: int):
    import optuna

    startup = spec.sampler.startup_trials or max(2, min(10, trials // 3))
    return optuna.samplers.TPESampler(seed=spec.sampler.seed + worker_index, n_startup_trials=startup,
                                      constant_liar=True, multivariate=True)


def pruner(spec: SearchSpec):
    import optuna

    p = spec.pruner
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps)
    if p.type == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


# ── a worker ────────────────────────────────────────────────────────────────────────────────

def work(study, storage, config: RecipeConfig, spec: SearchSpec, workspace: Workspace, console: Console,
         threads: int | None = None) -> int:
    """Claim queued trials and run them until none is left; returns how many this worker ran."""
    import optuna

    done = 0
    while True:
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, and queued again
        trial_id = claim_queued_trial(study, storage)
        if trial_id is None:
            return done
        with Heartbeat(storage, trial_id):
            run_trial(study, optuna.Trial(study, trial_id), config, spec, workspace, console, threads)
        done += 1


def claim_queued_trial(study, storage) -> int | None:
    """Move one WAITING trial to RUNNING; the storage refuses the change to every worker but one.
    (What ``Study.ask`` does first, without its fallback of creating a trial when none waits.)"""
    import optuna
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def run_trial(study, trial, config: RecipeConfig, spec: SearchSpec, workspace: Workspace, console: Console,
              threads: int | None) -> None:
    """Train one trial's config as a run of its own, nested under the study in MLflow; prune it
    when the pruner says so; tell the study its value (the best validation metric it reached)."""
    from optuna.trial import TrialState

    values = {key: param.suggest(trial, key) for key, param in spec.params.items()}
    trial_config = with_values(config, values | ({"training.threads": threads} if threads else {}))
    trial_config = trial_config.model_copy(update={"run_name": f"{study.study_name}-t{trial.number:03d}"})
    run = new_run(workspace, trial_config.run_name)
    parent = study.user_attrs.get("mlflow_run_id")
    # The trial's MLflow run: a child of the study's, tagged with its trial (read by tracker.open_run_tracker).
    write_tracking(run, parent_run_id=parent, tags={"optuna.study": study.study_name, "optuna.trial": str(trial.number)})
    trial.set_user_attr("run_id", run.id)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    console.print(f"trial {trial.number}: {_describe(values)}  (run {run.id})", markup=False, highlight=False)
    pruning = PruningCallback(trial, spec.metric)
    try:
        recipe_for(trial_config).run(trial_config, workspace, run=run, console=console,
                                     name=trial_config.run_name, callbacks=[pruning])
    except Exception as e:  # noqa: BLE001 — one failed trial (out of memory, bad value) must not end the study
        trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:1000])
        study.tell(trial, state=TrialState.FAIL)
        if run.info().get("status") == "interrupted":  # Ctrl-C: stop this worker; the point waits for the next
            study.enqueue_trial(trial.params, user_attrs={"queued_at": time.time(), "retry_of": trial.number})
            raise
        console.print(f"trial {trial.number} failed: {e}", style="red", markup=False, highlight=False)
        return
    run.update_info(tuning={"study": study.study_name, "trial": trial.number, "pruned": pruning.pruned})
    if pruning.pruned:
        study.tell(trial, state=TrialState.PRUNED)
        console.print(f"trial {trial.number} pruned at step {pruning.last_step}: {spec.metric} {pruning.last_value:.4f}",
                      markup=False, highlight=False)
        return
    if pruning.best is None:
        trial.set_user_attr("error", f"no {spec.metric} was logged: give validation data (or a validation_fraction)")
        study.tell(trial, state=TrialState.FAIL)
        return
    study.tell(trial, pruning.best)
    console.print(f"trial {trial.number}: {spec.metric} {pruning.best:.4f}", markup=False, highlight=False)


class PruningCallback(TrainerCallback):
    """Reports each validation figure to the trial and stops training when the pruner says so."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric
        self.pruned = False
        self.best: float | None = None
        self.last_value: float | None = None
        self.last_step = 0
        self.minimize = trial.study.direction.name == "MINIMIZE"

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is None:
            return
        self.last_value, self.last_step = value, state.global_step
        self.best = value if self.best is None else (min if self.minimize else max)(self.best, value)
        self.trial.report(value, state.global_step)
        # At the last step there is nothing left to save: the trial is complete, whatever its value.
        if state.global_step < state.max_steps and self.trial.should_prune():
            self.pruned = True
            control.should_training_stop = True


class Heartbeat:
    """Records the trial's heartbeat every HEARTBEAT_SECONDS while it trains (a daemon thread)."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self.stopped = threading.Event()

    def __enter__(self):
        self.storage.record_heartbeat(self.trial_id)
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()
        return self

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # noqa: BLE001 — a missed beat is retried at the next interval
                pass

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


# ── more workers on this machine ────────────────────────────────────────────────────────────

def spawn_workers(name: str, storage: str, count: int, threads: int | None, home: Path) -> list[subprocess.Popen]:
    """``count`` more worker processes (``tunesmith tune --join``), each with its own worker index."""
    procs = []
    for index in range(1, count + 1):
        command = [sys.executable, "-m", "tunesmith", "tune", "--join", name, "--storage", storage,
                   "--worker-index", str(index), "--no-report"]
        if threads:
            command += ["--threads", str(threads)]
        env = os.environ | {"TUNESMITH_HOME": str(home)}
        procs.append(subprocess.Popen(command, env=env))
    return procs


def threads_per_worker(workers: int, threads: int | None) -> int | None:
    if threads or workers <= 1:
        return threads
    return max(1, (os.cpu_count() or 1) // workers)


def quiet_optuna() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                     for k, v in values.items())
