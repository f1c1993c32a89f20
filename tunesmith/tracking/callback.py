"""The bridge from the HF Trainer to MLflow, and the W&B / TensorBoard switches.

Why not transformers' own ``MLflowCallback``: it logs through MLflow's global "active run" and lets
every logging error propagate into the training loop, so a tracking server that goes down stops
training. This callback logs through a guarded client (tracker.Tracker) instead, and knows the
tunesmith run: resolved config as parameters, dataset fingerprints, the adapter and reports.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from transformers import TrainerCallback

from tunesmith.config import PreferenceConfig
from tunesmith.data.general import replay_path
from tunesmith.runs import Run
from tunesmith.tracking.tracker import Tracker, count_records, flatten, open_run_tracker
from tunesmith.workspace import Workspace

# Summary entries that are not measurements (counts of things, ids) stay out of the metrics.
_NOT_METRICS = {"global_step"}


class TrainingTracker(TrainerCallback):
    """Opens the MLflow run when training starts (rank 0), logs every log/evaluation at its step;
    the recipe calls ``complete`` after the final save, ``fit`` calls ``abort`` on failure."""

    def __init__(self, run: Run, config, workspace: Workspace, console: Console):
        self.run, self.config, self.workspace, self.console = run, config, workspace, console
        self.tracker: Tracker | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or self.tracker is not None:
            return
        info = self.run.info()
        self.tracker, new = open_run_tracker(self.run, self.workspace, self.config.tracking, self.run.id,
                                             run_tags(self.run, self.config), self._warn)
        if new and self.tracker.active:
            self.tracker.log_params(flatten(self.config.model_dump(mode="json")))
            self.tracker.log_datasets(datasets_of(self.config, info.get("data", {})))
        if self.tracker.active:
            self.console.print(f"tracking: MLflow run {self.tracker.mlflow_run_id} in {self.tracker.client.tracking_uri}",
                               markup=False, highlight=False, style="dim")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.tracker is not None and logs:
            self.tracker.log_metrics(logs, state.global_step)

    def complete(self, summary: dict[str, Any], final_dir: Path) -> None:
        if self.tracker is not None:
            log_outcome(self.tracker, self.run, self.config.tracking.log_weights, summary, final_dir, "FINISHED")

    def abort(self, status: str) -> None:
        """FAILED for an error, KILLED for an interruption (the run can still be resumed)."""
        if self.tracker is not None:
            self.tracker.log_artifact(self.run.dir / "metrics.jsonl", "run")
            self.tracker.finish(status)

    def _warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)


def run_tags(run: Run, config) -> dict[str, str]:
    """The tags every tracked training run carries: what it is, where it lives."""
    tags = {"tunesmith.run_id": run.id, "tunesmith.run_dir": str(run.dir), "recipe": config.recipe,
            "base_model": run.info().get("base_model", config.model), "method": config.method}
    if isinstance(config, PreferenceConfig):
        tags["preference.algorithm"] = config.preference.algorithm
    return tags


def log_outcome(tracker: Tracker, run: Run, log_weights: str, summary: dict[str, Any], final_dir: Path | None,
                status: str) -> None:
    """What a finished run adds to its MLflow run: the summary as ``final.*`` metrics, the run's
    files, the weights (as ``log_weights`` says), and its closing status."""
    if summary:
        step = int(summary.get("global_step") or 0)
        tracker.log_metrics({f"final.{k}": v for k, v in summary.items() if k not in _NOT_METRICS}, step)
    for name in ("config.yaml", "run.json", "summary.json", "metrics.jsonl", "events.jsonl"):
        tracker.log_artifact(run.dir / name, "run")
    if final_dir is not None and final_dir.is_dir():
        if log_weights == "all" or (log_weights == "adapter" and final_dir.name == "adapter"):
            tracker.log_artifact(final_dir, final_dir.name)
        tracker.set_tags({"weights_path": str(final_dir)})
    tracker.set_tags({"status": run.info().get("status", "succeeded")})
    tracker.finish(status)


def tracking_callbacks(config, workspace: Workspace, run: Run, console: Console) -> list:
    """Our MLflow callback when the config asks for MLflow (the default)."""
    return [TrainingTracker(run, config, workspace, console)] if "mlflow" in config.tracking.report_to else []


def hf_report_to(settings, run: Run, console: Console) -> list[str]:
    """The integrations transformers runs itself (``TrainingArguments.report_to``): W&B and
    TensorBoard where installed; MLflow is ours (above). W&B runs offline unless a key is set."""
    chosen = []
    for name, package in (("wandb", "wandb"), ("tensorboard", "tensorboard")):
        if name not in settings.report_to:
            continue
        if importlib.util.find_spec(package) is None:
            console.print(f"warning: tracking.report_to includes {name}, which is not installed "
                          f"(pip install {package}); training goes on without it", style="yellow", markup=False)
            continue
        chosen.append(name)
    if "wandb" in chosen:
        if not os.environ.get("WANDB_API_KEY"):
            _set_env("WANDB_MODE", "offline")
        _set_env("WANDB_DIR", str(run.dir))
        _set_env("WANDB_PROJECT", settings.experiment or "tunesmith")
    return chosen


_SET_BY_US: set[str] = set()


def _set_env(key: str, value: str) -> None:
    """A user's own value wins; ours is replaced per run (a server worker trains many runs)."""
    if key not in os.environ or key in _SET_BY_US:
        os.environ[key] = value
        _SET_BY_US.add(key)


def datasets_of(config, hashes: dict[str, str]) -> list[dict[str, Any]]:
    """Name, path, SHA-256 and record count of each data file the run trained on."""
    paths = {name: getattr(config.data, name, None) for name in ("train", "validation", "test")}
    if getattr(config, "replay", None) is not None:
        paths["replay"] = str(replay_path(config.replay))
    found = []
    for name, sha in hashes.items():
        path = paths.get(name)
        if path and Path(path).is_file():
            found.append({"name": name, "path": str(path), "sha256": sha, "records": count_records(path)})
    return found
