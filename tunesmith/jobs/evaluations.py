"""Runs and their evaluations for the web UI (tunesmith's own routes): every run directory
(trained by a job or on the command line), its latest evaluation report, an evaluation started
in the background, and the compare table across runs.

An evaluation is ``tunesmith eval`` in a child process, not a thread of the server: it loads
models and generates for minutes, holds the GIL and memory the server's requests need, and a
crash or an out-of-memory kill must not take the server with it. Its state lives beside the
report (``runs/<id>/eval/task.json`` and ``task.log``), so a restarted server still knows it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tunesmith.config import load_config
from tunesmith.data.validate import validate_file
from tunesmith.errors import APIError, TunesmithError, not_found
from tunesmith.eval.compare import comparison, run_row
from tunesmith.files import process_alive, write_json_atomic
from tunesmith.jobs.db import Database, JobRow
from tunesmith.jobs.files import FileStore
from tunesmith.models.store import resolve_model
from tunesmith.runs import Run, all_runs, is_run_ref, requested_run
from tunesmith.workspace import Workspace

LOG_TAIL_LINES = 40
# Children of this server process, by run id: their exit status is read here (and reaped).
_children: dict[str, subprocess.Popen] = {}


def list_runs(workspace: Workspace, db: Database) -> list[dict[str, Any]]:
    """Every run in the home, newest first, with its job (if a job trained it) and the headline
    figures of its latest evaluation."""
    jobs = _jobs_by_run(db)
    return [_run_object(run, jobs.get(run.id)) for run in reversed(all_runs(workspace))]


def run_object(workspace: Workspace, db: Database, run_id: str) -> dict[str, Any]:
    """One run, with the held-out data its config names (``test_data``: null when none)."""
    run = _run(workspace, run_id)
    test = load_config(run.config_path).data.test if run.config_path.exists() else None
    return _run_object(run, _jobs_by_run(db).get(run.id)) | {"test_data": Path(test).name if test else None}


def evaluation(workspace: Workspace, run_id: str) -> dict[str, Any]:
    """The run's evaluation task (none, running, succeeded, failed, interrupted) with the tail of
    its log, and its latest report."""
    run = _run(workspace, run_id)
    report_path = run.eval_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return {"object": "tunesmith.evaluation", "run": run.id, "task": _task_state(run), "report": report,
            "html": (run.eval_dir / "report.html").exists()}


def report_html(workspace: Workspace, run_id: str) -> str:
    """The self-contained report page ``tunesmith eval`` wrote (plots inline, no scripts)."""
    path = _run(workspace, run_id).eval_dir / "report.html"
    if not path.exists():
        raise not_found("evaluation report of run", run_id)
    return path.read_text(encoding="utf-8")


def start(workspace: Workspace, files: FileStore, run_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Start ``tunesmith eval`` on a finished run: on an uploaded file (``data_file``) or the
    run's own ``data.test``; ``max_examples``, ``samples``, ``baselines`` and ``against`` as on the command line."""
    run = _run(workspace, run_id)
    if run.info().get("status") != "succeeded":
        raise APIError(409, f"run {run.id} has not finished training (status {run.info().get('status')}).",
                       "invalid_state", None)
    if _task_state(run)["status"] == "running":
        raise APIError(409, f"an evaluation of {run.id} is already running.", "invalid_state", None)
    command = [sys.executable, "-m", "tunesmith", "eval", run.id, *_eval_options(files, body),
               *_against_options(workspace, body.get("against") or [])]
    run.eval_dir.mkdir(parents=True, exist_ok=True)
    data_file = body.get("data_file")
    task = {"command": command[3:], "data_file": data_file,
            "data_filename": files.get(data_file).filename if data_file else None,
            "started_at": int(time.time()), "status": "running"}
    with open(run.eval_dir / "task.log", "w", encoding="utf-8") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=dict(os.environ, TUNESMITH_HOME=str(workspace.home), COLUMNS="110"))
    _children[run.id] = child
    write_json_atomic(run.eval_dir / "task.json", task | {"pid": child.pid})
    return evaluation(workspace, run.id)


def compare(workspace: Workspace, run_ids: list[str]) -> dict[str, Any]:
    """The compare table of ``tunesmith compare`` (latest evaluations side by side), not written to files."""
    if not run_ids:
        raise APIError(400, "give the runs to compare: ?runs=ID&runs=ID", "invalid_value", "runs")
    return comparison([_run(workspace, r) for r in run_ids])


def _eval_options(files: FileStore, body: dict[str, Any]) -> list[str]:
    options: list[str] = []
    if body.get("data_file"):
        row = files.get(str(body["data_file"]))
        # An upload is marked invalid below 10 examples (too few to train on); held-out data may be smaller.
        report = validate_file(files.path(row.id), min_examples=1)
        if not report.ok:
            problems = report.summary(limit=10).replace(str(files.path(row.id)), row.filename)
            raise APIError(400, f"file {row.id} ({row.filename}) cannot be evaluated on: {problems}",
                           "invalid_value", "data_file")
        options += ["--data", str(files.path(row.id))]
    for key, flag in (("max_examples", "--max-examples"), ("samples", "--samples")):
        if body.get(key) is not None:
            value = body[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise APIError(400, f"{key} must be a whole number ≥ 0, not {value!r}.", "invalid_value", key)
            options += [flag, str(value)]
    if body.get("baselines") is False:
        options.append("--no-baselines")
    return options


def _against_options(workspace: Workspace, against: list[str]) -> list[str]:
    """``--against`` for each name, each a run of this home or a model tunesmith can load (an
    unknown one is a 400 here, not a failed evaluation later)."""
    options: list[str] = []
    for target in against:
        if not is_run_ref(target, workspace):
            try:
                resolve_model(target, workspace)
            except TunesmithError as e:
                raise APIError(400, f"against: {e}", "invalid_value", "against") from None
        options += ["--against", target]
    return options


def _task_state(run: Run) -> dict[str, Any]:
    path = run.eval_dir / "task.json"
    if not path.exists():
        return {"status": "none"}
    task = json.loads(path.read_text())
    if task["status"] == "running":
        task = _settle(run, task, path)
    log = run.eval_dir / "task.log"
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []
    return {k: v for k, v in task.items() if k != "pid"} | {"log": lines[-LOG_TAIL_LINES:]}


def _settle(run: Run, task: dict[str, Any], path: Path) -> dict[str, Any]:
    """Record how a finished child ended: its exit status if this process started it, else (a
    restarted server) whether a report newer than the start was written."""
    child = _children.get(run.id)
    if child is not None and child.pid == task.get("pid"):
        code = child.poll()
        if code is None:
            return task
        _children.pop(run.id, None)
        status = "succeeded" if code == 0 else "failed"
    elif process_alive(task.get("pid")):
        return task
    else:
        report = run.eval_dir / "report.json"
        status = "succeeded" if report.exists() and report.stat().st_mtime >= task["started_at"] else "interrupted"
    task = task | {"status": status, "finished_at": int(time.time())}
    write_json_atomic(path, task)
    return task




def _run(workspace: Workspace, run_id: str) -> Run:
    return requested_run(run_id, workspace)


def _jobs_by_run(db: Database) -> dict[str, JobRow]:
    with db.session() as session:
        return {job.run_id: job for job in session.scalars(select(JobRow).where(JobRow.run_id.is_not(None)))}


def _run_object(run: Run, job: JobRow | None) -> dict[str, Any]:
    info = run.info()
    row = run_row(run)
    return {"object": "tunesmith.run", "id": run.id, "recipe": info.get("recipe", "sft"),
            "base_model": info.get("base_model"), "method": info.get("method"), "status": info.get("status"),
            "created_at": int(info.get("created_at") or run.info_path.stat().st_mtime),
            "job": job.id if job else None, "fine_tuned_model": job.fine_tuned_model if job else None,
            "evaluated": (run.eval_dir / "report.json").exists(),
            "evaluation": {k: v for k, v in row.items() if k not in ("run", "recipe", "base_model", "method", "status")}}
