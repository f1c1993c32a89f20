"""`tunesmith runs list|show|compare`: what the tracking store holds, beside the run directories.

The store is the record (it may be shared by several machines, or a server); runs that never
reached it (tracking off, or its store was down) are still listed from their directories, marked
``tracked: false``, so nothing trained goes missing from the list.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from tunesmith.errors import RunNotFound, TunesmithError
from tunesmith.runs import Run, all_runs, find_run
from tunesmith.tracking import store
from tunesmith.tracking.tracker import read_tracking
from tunesmith.workspace import Workspace

# Metrics shown in the list, first found wins per column.
_LIST_METRICS = {"val loss": ("final.best_eval_loss", "eval_loss"), "val macro F1": ("final.best_eval_macro_f1", "eval_macro_f1"),
                 "test": ("test.exact_match", "test.accuracy", "test.reward_accuracy", "test.loss")}


def list_runs(workspace: Workspace, tracking_uri: str | None = None, experiment: str | None = None,
              include_evals: bool = False, warn: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One row per tracked run (training runs and studies; evaluations with ``include_evals``),
    oldest first, then the run directories the store does not know. An unreadable store is a
    warning: the run directories are still listed."""
    dest = store.destination(workspace, tracking_uri)
    rows, seen = [], set()
    try:
        client = store.client(dest)
        experiments = [client.get_experiment_by_name(experiment)] if experiment else client.search_experiments()
        for exp in filter(None, experiments):
            for mlrun in _all_runs(client, exp.experiment_id):
                kind = mlrun.data.tags.get("tunesmith.kind", "train")
                seen.add(mlrun.data.tags.get("tunesmith.run_id"))
                if kind == "eval" and not include_evals:
                    continue
                rows.append(_row(mlrun, exp.name, kind))
    except Exception as e:  # noqa: BLE001 — MLflow raises its own types per store kind
        warn(f"cannot read the tracking store {dest.tracking_uri} ({type(e).__name__}: {str(e)[:200]}); "
             "listing the run directories only")
    rows.sort(key=lambda r: r["started"] or 0)
    if not experiment:
        rows += [_local_row(run) for run in all_runs(workspace) if run.id not in seen]
    return rows


def show_run(ref: str, workspace: Workspace, tracking_uri: str | None = None) -> dict[str, Any]:
    """Everything the store has on one run: parameters, latest metrics (with how many points each),
    tags, dataset inputs, artefacts and its evaluations (or a study's trials). ``ref`` is a run id
    (as for every other command), a study name or an MLflow run id."""
    client, mlrun = _find_tracked(ref, workspace, tracking_uri)
    history = {key: len(client.get_metric_history(mlrun.info.run_id, key)) for key in mlrun.data.metrics}
    evals = client.search_runs([mlrun.info.experiment_id],
                               filter_string=f"tags.mlflow.parentRunId = '{mlrun.info.run_id}'",
                               order_by=["attributes.start_time ASC"])
    return _row(mlrun, client.get_experiment(mlrun.info.experiment_id).name, mlrun.data.tags.get("tunesmith.kind", "train")) | {
        "params": dict(sorted(mlrun.data.params.items())),
        "metrics": {k: {"last": v, "points": history[k]} for k, v in sorted(mlrun.data.metrics.items())},
        "tags": {k: v for k, v in sorted(mlrun.data.tags.items()) if not k.startswith("mlflow.")},
        "datasets": [{"name": d.dataset.name, "digest": d.dataset.digest, "source": d.dataset.source,
                      "profile": d.dataset.profile} for d in (mlrun.inputs.dataset_inputs if mlrun.inputs else [])],
        "artifacts": _artifacts(client, mlrun.info.run_id),
        "children": [_row(child, "", child.data.tags.get("tunesmith.kind", "train")) | {"metrics": dict(child.data.metrics)}
                     for child in evals],
        "tracking_uri": client.tracking_uri,
    }


def compare_runs(refs: list[str], workspace: Workspace, tracking_uri: str | None = None) -> dict[str, Any]:
    """Parameters that differ between the runs, and every metric, side by side."""
    if len(refs) < 2:
        raise TunesmithError("give at least two runs to compare")
    found = [_find_tracked(ref, workspace, tracking_uri)[1] for ref in refs]
    names = [r.data.tags.get("tunesmith.run_id") or r.info.run_name for r in found]
    param_keys = sorted(set().union(*(r.data.params for r in found)))
    differing = {k: [r.data.params.get(k) for r in found] for k in param_keys
                 if len({r.data.params.get(k) for r in found}) > 1}
    metric_keys = sorted(set().union(*(r.data.metrics for r in found)))
    metrics = {k: [r.data.metrics.get(k) for r in found] for k in metric_keys}
    return {"runs": names, "mlflow_run_ids": [r.info.run_id for r in found], "params": differing,
            "same_params": len(param_keys) - len(differing), "metrics": metrics}


# ── helpers ─────────────────────────────────────────────────────────────────────────────────

def _find_tracked(ref: str, workspace: Workspace, tracking_uri: str | None):
    try:
        run = find_run(ref, workspace)
    except RunNotFound:
        run = None
    recorded = read_tracking(run) if run else {}
    dest = store.destination(workspace, tracking_uri or recorded.get("tracking_uri"))
    client = store.client(dest)
    mlflow_run_id = recorded.get("mlflow_run_id") or (None if run else ref)
    if mlflow_run_id:
        try:
            return client, client.get_run(mlflow_run_id)
        except Exception:  # noqa: BLE001 — MLflow raises its own exception types per store
            pass
    if run is None and "'" not in ref:  # a study, or a run trained on another machine: by its tunesmith id
        experiments = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(experiments, filter_string=f"tags.`tunesmith.run_id` = '{ref}'",
                                   order_by=["attributes.start_time DESC"], max_results=1) if experiments else []
        if found:
            return client, found[0]
    where = f"{run.id} was not tracked (its tracking was off or its store unreachable)" if run else f"no run {ref!r}"
    raise RunNotFound(f"{where} in {dest.tracking_uri}")


def _all_runs(client, experiment_id: str):
    token = None
    while True:
        page = client.search_runs([experiment_id], order_by=["attributes.start_time ASC"], max_results=1000,
                                  page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _row(mlrun, experiment: str, kind: str) -> dict[str, Any]:
    tags, metrics, info = mlrun.data.tags, mlrun.data.metrics, mlrun.info
    row = {"run": tags.get("tunesmith.run_id") or info.run_name, "kind": kind, "tracked": True,
           "mlflow_run_id": info.run_id, "experiment": experiment, "status": info.status,
           "recipe": tags.get("recipe"), "method": tags.get("method"), "base_model": tags.get("base_model"),
           "parent": tags.get("mlflow.parentRunId"), "started": info.start_time / 1000 if info.start_time else None,
           "seconds": (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None}
    for column, keys in _LIST_METRICS.items():
        key = next((k for k in keys if k in metrics), None)
        row[column] = metrics[key] if key else None
        if column == "test":
            row["test_metric"] = key.removeprefix("test.") if key else None
    if kind == "study":
        row["test"] = None
        row["best"] = metrics.get("best_value")
    return row


def _local_row(run: Run) -> dict[str, Any]:
    info, summary = run.info(), run.summary()
    status = {"succeeded": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "running": "RUNNING"}
    return {"run": run.id, "kind": "train", "tracked": False, "mlflow_run_id": None, "experiment": None,
            "status": status.get(info.get("status"), info.get("status")), "recipe": info.get("recipe"),
            "method": info.get("method"), "base_model": info.get("base_model"), "parent": None,
            "started": info.get("created_at"), "seconds": summary.get("train_seconds"),
            "val loss": summary.get("best_eval_loss"), "val macro F1": summary.get("best_eval_macro_f1"), "test": None,
            "test_metric": None}


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    try:
        listed = client.list_artifacts(run_id, path)
    except Exception:  # noqa: BLE001 — an unreachable artefact store leaves the rest readable
        return []
    found = []
    for item in listed:
        found += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def started_text(seconds: float | None) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(seconds)) if seconds else "-"
