"""Where experiment tracking writes: the MLflow tracking URI and experiment of a run.

The default needs no server: a SQLite store in the tunesmith home (``<home>/mlflow.db``) with
artefacts beside it (``<home>/mlartifacts``). A ``tracking_uri`` in the config, or
``MLFLOW_TRACKING_URI``, points it anywhere MLflow can write (a server, Postgres, Databricks).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from tunesmith.workspace import Workspace

DEFAULT_EXPERIMENT = "tunesmith"

# MLflow's HTTP client retries a refused connection 7 times with exponential backoff (minutes in
# all) and waits 120 s per request. A tracking server that is down must cost a run seconds, not
# minutes, before tunesmith gives up on tracking and goes on training; a user's own values win.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


@dataclass(frozen=True)
class Destination:
    tracking_uri: str
    experiment: str
    artifact_root: str | None  # only for the default local store; a server decides its own


def destination(workspace: Workspace, tracking_uri: str | None = None, experiment: str | None = None) -> Destination:
    """The config's values, else MLflow's own environment variables, else the local store."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    artifact_root = None
    if not uri:
        uri = f"sqlite:///{workspace.mlflow_db_path}"
        # Without an explicit location MLflow puts artefacts in ./mlartifacts of whatever
        # directory the command ran in; a home-wide store keeps them in the home.
        artifact_root = workspace.mlflow_artifacts_dir.as_uri()
    return Destination(uri, experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT, artifact_root)


def client(dest: Destination):
    """An MlflowClient for the destination (creating the local store's directory and schema)."""
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if dest.tracking_uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(dest.tracking_uri[len("sqlite:///"):]) or ".", exist_ok=True)
    _quiet_mlflow()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=dest.tracking_uri)


def experiment_id(mlflow_client, dest: Destination) -> str:
    """The experiment's id, created on first use (a concurrent creator wins without an error)."""
    found = mlflow_client.get_experiment_by_name(dest.experiment)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow_client.create_experiment(dest.experiment, artifact_location=dest.artifact_root)
    except Exception:
        found = mlflow_client.get_experiment_by_name(dest.experiment)
        if found is None:
            raise
        return found.experiment_id


def _quiet_mlflow() -> None:
    # MLflow logs each schema migration and "View run ... at" lines at INFO; tunesmith prints
    # what matters itself.
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
