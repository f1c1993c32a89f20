"""`tunesmith tune`: one search from start to end.

Read top to bottom: the study (created with its queue of trials, or joined) → the study's MLflow
run → more workers on this machine → this process works too → wait for them → the report.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from tunesmith.config import ClassifyConfig, PreferenceConfig, RecipeConfig, SFTConfig, load_config
from tunesmith.errors import TunesmithError
from tunesmith.tracking import store
from tunesmith.tracking.tracker import Tracker, flatten
from tunesmith.tuning import report, study as studies
from tunesmith.tuning.space import SearchSpec, load_search
from tunesmith.workspace import Workspace


def plan(config: RecipeConfig | str | Path | None, trials: int, search: str | Path | None,
         overrides: list[str] | None, join: str | None, workers: int) -> tuple[RecipeConfig | None, SearchSpec | None]:
    """The validated config and search space of a new study (None, None to ``join`` one); every
    wrong combination of arguments refused before anything is created."""
    if join:
        if config is not None:
            raise TunesmithError("--join works on a study as it was created: give no config with it")
        cfg, spec = None, None
    else:
        if config is None:
            raise TunesmithError("give a config to tune (or --join STUDY to work on an existing study)")
        cfg = config if isinstance(config, (SFTConfig, ClassifyConfig, PreferenceConfig)) else load_config(config, overrides)
        if not isinstance(config, (SFTConfig, ClassifyConfig, PreferenceConfig)) and cfg.run_name is None:
            cfg = cfg.model_copy(update={"run_name": Path(config).stem})
        spec = load_search(search, cfg)
        if trials < 1:
            raise TunesmithError("--trials must be at least 1")
    if workers < 0 or (workers == 0 and join):
        raise TunesmithError("--workers must be at least 1 (0 only queues the trials of a new study)")
    return cfg, spec


def tune(config: RecipeConfig | None, spec: SearchSpec | None, workspace: Workspace, console: Console,
         trials: int = 10, storage: str | None = None, workers: int = 1, study_name: str | None = None,
         join: str | None = None, worker_index: int | None = None, threads: int | None = None,
         write_report: bool = True) -> dict[str, Any]:
    """Create (or ``join``) a study and work on it until its queue is empty; returns the report."""
    url = studies.storage_url(workspace, storage)
    name = join or study_name or f"{config.run_name or config.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not join:
        studies.create_study(config, spec, trials, url, name)
        console.print(f"study {name}: {trials} trial(s) queued in {url}", markup=False, highlight=False)
    if worker_index is None:  # a worker joined by hand: a seed of its own (the creator's is 0)
        worker_index = 0 if not join else os.getpid()
    study, storage_obj, config, spec = studies.load_study(name, url, worker_index)
    if not join:
        _open_study_run(study, config, spec, workspace, console)
    if workers == 0:  # queue only: workers join later, here or on other machines
        return {"study": name, "storage": url, "queued": trials, "ran": 0}
    threads = studies.threads_per_worker(workers, threads)
    helpers = studies.spawn_workers(name, url, workers - 1, threads, workspace.home) if workers > 1 else []
    ran = studies.work(study, storage_obj, config, spec, workspace, console, threads)
    for helper in helpers:
        helper.wait()
    console.print(f"this worker ran {ran} trial(s)", markup=False, highlight=False, style="dim")
    if not write_report:
        return {"study": name, "ran": ran}
    summary = report.write(study, config, workspace.study_dir(name))
    summary["storage"] = url
    _close_study_run(study, config, summary, workspace, console)
    return summary


def _open_study_run(study, config: RecipeConfig, spec: SearchSpec, workspace: Workspace, console: Console) -> None:
    """The study's MLflow run (once per study), parent of every trial's run."""
    if "mlflow" not in config.tracking.report_to or study.user_attrs.get("mlflow_run_id"):
        return
    tracker = Tracker(None, _warner(console))
    tags = {"tunesmith.kind": "study", "tunesmith.run_id": study.study_name, "recipe": config.recipe,
            "method": config.method, "base_model": config.model, "optuna.study": study.study_name}
    if tracker.open(_destination(config, workspace), study.study_name, tags):
        search = {f"search.{k}": v for k, v in flatten(spec.model_dump(mode="json")).items()}
        tracker.log_params(search | {f"config.{k}": v for k, v in flatten(config.model_dump(mode="json")).items()})
        study.set_user_attr("mlflow_run_id", tracker.mlflow_run_id)


def _close_study_run(study, config: RecipeConfig, summary: dict[str, Any], workspace: Workspace, console: Console) -> None:
    run_id = study.user_attrs.get("mlflow_run_id")
    if not run_id:
        return
    tracker = Tracker.attach(None, _warner(console), store.client(_destination(config, workspace)), run_id)
    counts = summary["trials"]
    tracker.log_metrics({"best_value": summary.get("best_value"), **{f"trials_{k}": v for k, v in counts.items()}},
                        len(study.trials))
    # Tags, not params: a study extended later may find a new best, and MLflow params never change.
    tracker.set_tags({f"best.{k}": v for k, v in summary.get("best_params", {}).items()}
                     | {"best.trial": summary.get("best_trial"), "best.run": summary.get("best_run")})
    for path in summary["files"].values():
        tracker.log_artifact(Path(path), "study")
    if not counts["running"] and not counts["waiting"]:
        tracker.finish("FINISHED")


def _warner(console: Console):
    return lambda m: console.print(f"warning: {m}", style="yellow", markup=False, highlight=False)


def _destination(config: RecipeConfig, workspace: Workspace) -> store.Destination:
    return store.destination(workspace, config.tracking.tracking_uri, config.tracking.experiment)
