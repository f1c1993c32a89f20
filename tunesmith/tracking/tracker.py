"""One tunesmith run as one MLflow run: parameters, metrics, dataset fingerprints, artefacts.

Every call to MLflow goes through ``Tracker._guard``: the first failure (store unwritable, server
down, a rejected value) prints one warning, appends a ``tracking_failed`` event to the run's
``events.jsonl`` and switches tracking off for the rest of the run. Training never stops for it,
and ``metrics.jsonl`` (written by callbacks.MetricsLog, not by this module) stays complete.

The MLflow run id is kept in ``runs/<id>/tracking.json``, so a resumed run logs on into the same
MLflow run, and an evaluation logs as a child of it.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from tunesmith.files import write_json_atomic
from tunesmith.runs import Run
from tunesmith.tracking import store
from tunesmith.workspace import Workspace

TRACKING_FILE = "tracking.json"
EVENTS_FILE = "events.jsonl"
# MLflow's own limits (mlflow.utils.validation): longer values are cut, not refused.
_MAX_PARAM_VALUE = 6000
_MAX_BATCH_PARAMS = 100


class Tracker:
    """A guarded handle on one MLflow run; ``active`` is False once anything failed."""

    def __init__(self, run: Run | None, warn: Callable[[str], None]):
        self.run = run
        self.warn = warn
        self.client = None
        self.mlflow_run_id: str | None = None
        self.failed = False

    @classmethod
    def attach(cls, run: Run | None, warn: Callable[[str], None], client, mlflow_run_id: str) -> "Tracker":
        """A guarded handle on an MLflow run that already exists (to add to it)."""
        tracker = cls(run, warn)
        tracker.client, tracker.mlflow_run_id = client, mlflow_run_id
        return tracker

    @property
    def active(self) -> bool:
        return self.mlflow_run_id is not None and not self.failed

    # ── opening ──────────────────────────────────────────────────────────────────────────────

    def open(self, dest: store.Destination, name: str, tags: dict[str, str], parent_run_id: str | None = None,
             existing_run_id: str | None = None) -> bool:
        """Start a new MLflow run (or reopen ``existing_run_id``); True when it is new."""
        def start() -> bool:
            self.client = store.client(dest)
            if existing_run_id:
                self.client.update_run(existing_run_id, status="RUNNING")
                self.mlflow_run_id = existing_run_id
                return False
            all_tags = dict(tags) | ({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})
            created = self.client.create_run(store.experiment_id(self.client, dest), tags=all_tags, run_name=name)
            self.mlflow_run_id = created.info.run_id
            return True
        return bool(self._guard("open the MLflow run", start))

    # ── logging ──────────────────────────────────────────────────────────────────────────────

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key[:250], str(value)[:_MAX_PARAM_VALUE]) for key, value in params.items()]
        for start in range(0, len(items), _MAX_BATCH_PARAMS):
            chunk = items[start:start + _MAX_BATCH_PARAMS]
            self._guard("log parameters", lambda: self.client.log_batch(self.mlflow_run_id, params=chunk))

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, step) for key, value in metrics.items() if is_number(value)]
        if items:
            self._guard("log metrics", lambda: self.client.log_batch(self.mlflow_run_id, metrics=items))

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(key, str(value)) for key, value in tags.items() if value is not None]
        self._guard("set tags", lambda: self.client.log_batch(self.mlflow_run_id, tags=items))

    def log_datasets(self, datasets: list[dict[str, Any]]) -> None:
        """Dataset fingerprints as MLflow dataset inputs (shown with the run) and as params."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [DatasetInput(Dataset(name=d["name"], digest=d["sha256"][:32], source_type="local", source=d["path"],
                                       profile=json.dumps({"records": d["records"], "sha256": d["sha256"]})),
                               tags=[InputTag("mlflow.data.context", d["name"])])
                  for d in datasets]
        self._guard("log dataset inputs", lambda: self.client.log_inputs(self.mlflow_run_id, datasets=inputs))
        self.log_params({f"dataset.{d['name']}.{key}": d[key] for d in datasets for key in ("sha256", "records")})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self._guard(f"log {path.name}/", lambda: self.client.log_artifacts(self.mlflow_run_id, str(path), artifact_path))
        elif path.is_file():
            self._guard(f"log {path.name}", lambda: self.client.log_artifact(self.mlflow_run_id, str(path), artifact_path))

    def finish(self, status: str = "FINISHED") -> None:
        """FINISHED, FAILED or KILLED."""
        self._guard("close the MLflow run", lambda: self.client.set_terminated(self.mlflow_run_id, status=status))

    # ── the guard ────────────────────────────────────────────────────────────────────────────

    def _guard(self, what: str, call: Callable[[], Any]) -> Any:
        if self.failed:
            return None
        try:
            return call()
        except Exception as e:  # noqa: BLE001 — any tracking failure must leave training running
            self.failed = True
            message = (f"experiment tracking stopped: could not {what}: {type(e).__name__}: {str(e)[:300]}; "
                       "training goes on and metrics.jsonl stays complete")
            self.warn(message)
            if self.run is not None:
                record_event(self.run, "tracking_failed", message)
            return None


# ── the run's tracking file ─────────────────────────────────────────────────────────────────

def read_tracking(run: Run) -> dict[str, Any]:
    path = run.dir / TRACKING_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def write_tracking(run: Run, **fields: Any) -> None:
    write_json_atomic(run.dir / TRACKING_FILE, read_tracking(run) | fields)


def record_event(run: Run, kind: str, message: str) -> None:
    with open(run.dir / EVENTS_FILE, "a") as f:
        f.write(json.dumps({"time": time.time(), "event": kind, "level": "warning", "message": message}) + "\n")


def read_events(run: Run) -> list[dict[str, Any]]:
    path = run.dir / EVENTS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def open_run_tracker(run: Run, workspace: Workspace, settings, name: str, tags: dict[str, str],
                     warn: Callable[[str], None]) -> tuple[Tracker, bool]:
    """The tracker of a training run: its MLflow run reopened when ``tracking.json`` names one
    (a resume), else a new one under the parent (and with the tags) that ``tracking.json`` may
    name (a tuning trial)."""
    recorded = read_tracking(run)
    dest = store.destination(workspace, recorded.get("tracking_uri") or settings.tracking_uri,
                             recorded.get("experiment") or settings.experiment)
    tracker = Tracker(run, warn)
    new = tracker.open(dest, name, tags | recorded.get("tags", {}), parent_run_id=recorded.get("parent_run_id"),
                       existing_run_id=recorded.get("mlflow_run_id"))
    if tracker.active:
        write_tracking(run, tracking_uri=dest.tracking_uri, experiment=dest.experiment,
                       mlflow_run_id=tracker.mlflow_run_id)
    return tracker, new


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"learning_rate": 1e-4}}`` → ``{"training.learning_rate": 1e-4}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def count_records(path: str | Path) -> int:
    """Records in a JSONL file (non-blank lines) or a CSV file (rows after the header)."""
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        if path.suffix.lower() == ".csv":
            import csv
            return max(sum(1 for _ in csv.reader(f)) - 1, 0)
        return sum(1 for line in f if line.strip())


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
