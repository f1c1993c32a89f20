"""An evaluation as an MLflow run: a child of the training run it evaluated, with every numeric
figure of the report as a metric and the report files as artefacts. The headline figures (the
ones `tunesmith compare` shows) are also logged on the training run as ``test.<name>``, so the
MLflow UI and `tunesmith runs compare` put trained runs and their test scores side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tunesmith.config import load_config
from tunesmith.eval.compare import run_row
from tunesmith.runs import Run
from tunesmith.tracking import store
from tunesmith.tracking.tracker import Tracker, flatten, is_number, read_tracking
from tunesmith.workspace import Workspace


def log_evaluation(run: Run, report: dict[str, Any], report_files: dict[str, str] | list, workspace: Workspace,
                   warn: Callable[[str], None]) -> str | None:
    """Log one evaluation; returns the eval's MLflow run id (None when tracking is off or failed)."""
    settings = load_config(run.config_path).tracking
    if "mlflow" not in settings.report_to:
        return None
    recorded = read_tracking(run)
    dest = store.destination(workspace, recorded.get("tracking_uri") or settings.tracking_uri,
                             recorded.get("experiment") or settings.experiment)
    parent = recorded.get("mlflow_run_id")
    tracker = Tracker(run, warn)
    tags = {"tunesmith.run_id": run.id, "tunesmith.kind": "eval", "eval.data": str(report.get("data"))}
    if not tracker.open(dest, f"{run.id}-eval", tags, parent_run_id=parent):
        return None
    numbers = {k: v for k, v in flatten(_without_samples(report)).items() if is_number(v)}
    tracker.log_metrics(numbers, 0)
    for path in _paths(report_files):
        tracker.log_artifact(Path(path), "eval")
    tracker.finish("FINISHED")
    headline = {f"test.{k}": v for k, v in run_row(run).items() if is_number(v) and k != "train_seconds"}
    if parent and tracker.active:
        on_training_run = Tracker.attach(run, warn, tracker.client, parent)
        on_training_run.log_metrics(headline, 0)
        on_training_run.set_tags({"eval.latest_run_id": tracker.mlflow_run_id, "eval.data": report.get("data")})
    return tracker.mlflow_run_id if tracker.active else None


def _without_samples(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("samples", "report_files", "created_at")}


def _paths(report_files) -> list[str]:
    values = report_files.values() if isinstance(report_files, dict) else report_files or []
    paths: list[str] = []
    for value in values:
        paths += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return paths
