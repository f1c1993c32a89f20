"""`tunesmith runs sync`: record a run in the tracking store after the fact.

For runs that trained while the store was unreachable (tracking switched itself off), with
tracking off, or before tracking existed: everything a tracked run logs is rebuilt from the run
directory — the config, every line of metrics.jsonl at its step, the data fingerprints, the
summary and the artefacts — and the run's status is carried over.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from tunesmith.config import load_config
from tunesmith.runs import Run, all_runs, find_run
from tunesmith.tracking import store
from tunesmith.tracking.callback import datasets_of, log_outcome, run_tags
from tunesmith.tracking.tracker import Tracker, flatten, read_tracking, write_tracking
from tunesmith.workspace import Workspace

_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def needs_sync(run: Run, workspace: Workspace) -> bool:
    """True when the store the run would log to has no record of it."""
    recorded = read_tracking(run).get("mlflow_run_id")
    if not recorded:
        return True
    try:
        client = store.client(store.destination(workspace, read_tracking(run).get("tracking_uri")))
        client.get_run(recorded)
        return False
    except Exception:  # noqa: BLE001 — not found, or another store
        return True


def sync_run(run: Run, workspace: Workspace, warn: Callable[[str], None]) -> str | None:
    """Log the run as a new MLflow run; returns its id (None when the store failed too)."""
    config = load_config(run.config_path)
    info = run.info()
    dest = store.destination(workspace, config.tracking.tracking_uri, config.tracking.experiment)
    tracker = Tracker(run, warn)
    tags = run_tags(run, config) | {"tunesmith.synced": "true"}
    if not tracker.open(dest, run.id, tags, parent_run_id=read_tracking(run).get("parent_run_id")):
        return None
    tracker.log_params(flatten(config.model_dump(mode="json")))
    tracker.log_datasets(datasets_of(config, info.get("data", {})))
    for step, metrics in _metric_lines(run):
        tracker.log_metrics(metrics, step)
    log_outcome(tracker, run, config.tracking.log_weights, run.summary(), run.final_dir,
                _STATUS.get(info.get("status"), "FINISHED"))
    if not tracker.active:
        return None
    write_tracking(run, tracking_uri=dest.tracking_uri, experiment=dest.experiment, mlflow_run_id=tracker.mlflow_run_id)
    return tracker.mlflow_run_id


def _metric_lines(run: Run) -> list[tuple[int, dict[str, Any]]]:
    if not run.metrics_path.exists():
        return []
    lines = []
    for line in run.metrics_path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            step = int(record.pop("step", 0))
            for key in ("time", "epoch_time"):
                record.pop(key, None)
            lines.append((step, record))
    return lines


def sync_runs(runs: list[str] | None, workspace: Workspace, warn: Callable[[str], None]) -> list[dict[str, Any]]:
    """Sync ``runs`` (default: every run directory the store does not know); what was done per run."""
    chosen = [find_run(r, workspace) for r in runs] if runs else [r for r in all_runs(workspace) if needs_sync(r, workspace)]
    done = []
    for run in chosen:
        mlflow_run_id = sync_run(run, workspace, warn=warn)
        done.append({"run": run.id, "mlflow_run_id": mlflow_run_id, "synced": mlflow_run_id is not None})
    return done
