"""Monitoring on a schedule, from the server: ``tunesmith serve --monitor MODEL --monitor-every 1d``.

Each check is the ``tunesmith monitor`` command run as a child process (the same code, and a
crash or an out-of-memory in the embedding model cannot take the server down); with
``retrain`` it adds ``--retrain --submit``, so an alert that calls for it queues a retraining
job for the workers, which judge the new model before promoting it. When each model was last
checked, and what came of it, is kept in ``<home>/monitor/schedule.json``: a restarted server
does not check again before the next one is due.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tunesmith.files import write_json_atomic
from tunesmith.workspace import Workspace


@dataclass
class Schedule:
    models: list[str]
    every_seconds: float
    window: str | None = None          # --since of each check; None: the interval itself
    config: Path | None = None         # thresholds (YAML)
    retrain: bool = False
    alias: str | None = None
    tolerance: float = 0.0
    extra_args: list[str] = field(default_factory=list)

    def command(self, model: str) -> list[str]:
        since = self.window or f"{max(1, round(self.every_seconds / 60))}m"
        args = [sys.executable, "-m", "tunesmith", "monitor", model, "--since", since, "--json"]
        if self.config:
            args += ["--config", str(self.config)]
        if self.retrain:
            args += ["--retrain", "--submit", "--tolerance", str(self.tolerance)]
            args += ["--alias", self.alias] if self.alias else []
        return args + self.extra_args


def state_path(workspace: Workspace) -> Path:
    return workspace.monitor_schedule_path


def read_state(workspace: Workspace) -> dict:
    path = state_path(workspace)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def due(schedule: Schedule, workspace: Workspace, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    state = read_state(workspace)
    return [m for m in schedule.models if now - state.get(m, {}).get("checked_at", 0) >= schedule.every_seconds]


def check(schedule: Schedule, model: str, workspace: Workspace, timeout: float = 6 * 3600) -> dict:
    """Run one check of ``model`` and record its outcome (alerts, report, queued job, or error)."""
    started = time.time()
    done = subprocess.run(schedule.command(model), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TUNESMITH_HOME": str(workspace.home)})
    outcome: dict = {"checked_at": started, "seconds": round(time.time() - started, 1), "exit_code": done.returncode}
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        outcome["error"] = (done.stderr.strip().splitlines() or ["no output"])[-1][:500]
    else:
        retrain = report.get("retrain") or {}
        outcome |= {"alerts": [a["kind"] for a in report.get("alerts", [])],
                    "requests": report.get("traffic", {}).get("requests"),
                    "report": report.get("files", {}).get("html"),
                    "retraining_job": retrain.get("job")}
    state = read_state(workspace)
    state[model] = outcome
    write_json_atomic(state_path(workspace), state)
    return outcome


class Scheduler(threading.Thread):
    """Checks the due models one after another, then sleeps until the next is due (at most a
    minute, so a stop is quick)."""

    def __init__(self, schedule: Schedule, workspace: Workspace, log: Callable[[str], None] = print):
        super().__init__(name="tunesmith-monitor", daemon=True)
        self.schedule, self.workspace, self.log = schedule, workspace, log
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for model in due(self.schedule, self.workspace):
                if self.stopping.is_set():
                    return
                try:
                    outcome = check(self.schedule, model, self.workspace)
                except Exception as e:  # a broken check must not end the schedule
                    outcome = {"error": str(e)}
                self.log(f"monitor {model}: " + (f"error: {outcome['error']}" if "error" in outcome else
                         f"{outcome.get('requests')} request(s), alerts: {', '.join(outcome['alerts']) or 'none'}"
                         + (f", queued {outcome['retraining_job']}" if outcome.get("retraining_job") else "")))
            self.stopping.wait(min(60.0, self.schedule.every_seconds))

    def stop(self) -> None:
        self.stopping.set()
