"""The on-disk layout of a tunesmith home:

    models/<name>/           pulled models            runs/<id>/          training runs
    downloads/               pull downloads           cleaned/            training data cleaned on the fly
    files/<id>               uploaded files           logs/jobs/          each job attempt's trainer log
    tunesmith.db             the job database         aliases.json        serving aliases
    mlflow.db, mlartifacts/  the MLflow store         studies.db, studies/<name>/  hyperparameter searches
    compare/                 run and method tables    retrain/            retraining datasets
    monitor/<model>/         monitoring reports       monitor/schedule.json  scheduled checks
    judge/<time>/            `tunesmith judge` reports

This is the only module that builds paths inside the home. The home is passed in; it is read
from ``TUNESMITH_HOME`` (default ``~/.cache/tunesmith``) in exactly one function, ``default_home``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_home() -> Path:
    return Path(os.environ.get("TUNESMITH_HOME") or Path.home() / ".cache" / "tunesmith").expanduser()


def is_safe_name(name: str) -> bool:
    """True for names that can be used as one path component (no separators, no '..')."""
    return bool(_SAFE_NAME.match(name)) and ".." not in name


@dataclass(frozen=True)
class Workspace:
    home: Path

    @classmethod
    def default(cls) -> "Workspace":
        return cls(default_home())

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def downloads_dir(self) -> Path:
        return self.home / "downloads"

    @property
    def tools_dir(self) -> Path:
        """Programs fetched once from the package index (llama.cpp's GGUF converter)."""
        return self.home / "tools"

    def model_dir(self, name: str) -> Path:
        return self.models_dir / name

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    # ── the server: jobs, files, aliases ──

    @property
    def database_path(self) -> Path:
        """The job database, when no ``TUNESMITH_DATABASE_URL`` names another."""
        return self.home / "tunesmith.db"

    @property
    def files_dir(self) -> Path:
        return self.home / "files"

    @property
    def job_logs_dir(self) -> Path:
        return self.home / "logs" / "jobs"

    @property
    def aliases_path(self) -> Path:
        return self.home / "aliases.json"

    @property
    def cleaned_dir(self) -> Path:
        """Training data cleaned before a run, by the source file's hash."""
        return self.home / "cleaned"

    # ── tracking, search, comparison, monitoring ──

    @property
    def mlflow_db_path(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def studies_db_path(self) -> Path:
        return self.home / "studies.db"

    def study_dir(self, name: str) -> Path:
        return self.home / "studies" / name

    @property
    def compare_dir(self) -> Path:
        return self.home / "compare"

    @property
    def judge_dir(self) -> Path:
        """``tunesmith judge`` reports, one folder each (eval/judge.py)."""
        return self.home / "judge"

    @property
    def retrain_dir(self) -> Path:
        return self.home / "retrain"

    def monitor_dir(self, model: str) -> Path:
        """Where the monitoring reports of ``model`` go: its name made one safe path component."""
        return self.home / "monitor" / (re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._") or "model")

    @property
    def monitor_schedule_path(self) -> Path:
        return self.home / "monitor" / "schedule.json"
