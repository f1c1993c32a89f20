"""Distillations started over HTTP (``/v1/tunesmith/distillations``): ``tunesmith distill`` in a
child process, for the reasons an evaluation is one (jobs/evaluations.py): it asks a teacher for
minutes and trains, and a crash must not take the server with it. Its state lives in its own
directory (``<home>/distill/<id>/task.json``, ``task.log``; the report ``distill.json``), so a
restarted server still knows it.

The teacher's key comes in the request (``teacher_api_key``) and goes to the child in its
environment only, never to disk: a request never names an environment variable of the server,
whose secrets it could otherwise send to a URL of its choosing.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tunesmith.errors import not_found
from tunesmith.files import process_alive, write_json_atomic
from tunesmith.jobs.files import FileStore
from tunesmith.workspace import Workspace

LOG_TAIL_LINES = 40
KEY_VARIABLE = "TUNESMITH_TEACHER_KEY"  # the child's environment only
_children: dict[str, subprocess.Popen] = {}


def start(workspace: Workspace, files: FileStore, body: dict[str, Any]) -> dict[str, Any]:
    """Start ``tunesmith distill`` on an uploaded prompts file (``prompts_file``) and ``teacher``."""
    prompts = files.path(files.get(str(body["prompts_file"])).id)
    distillation_id = time.strftime("distill-%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    directory = _root(workspace) / distillation_id
    command = [sys.executable, "-m", "tunesmith", "distill", "--teacher", body["teacher"], "--prompts", str(prompts),
               "-o", str(directory), "--teacher-key-env", KEY_VARIABLE]
    for key, flag in (("teacher_base_url", "--teacher-base-url"), ("student", "--student"),
                      ("held_out", "--held-out"), ("max_tokens", "--max-tokens"),
                      ("requests_per_minute", "--requests-per-minute")):
        if body.get(key) is not None:
            command += [flag, str(body[key])]
    directory.mkdir(parents=True)
    env = dict(os.environ, TUNESMITH_HOME=str(workspace.home), COLUMNS="110")
    env.pop(KEY_VARIABLE, None)
    if body.get("teacher_api_key"):
        env[KEY_VARIABLE] = body["teacher_api_key"]
    with open(directory / "task.log", "w", encoding="utf-8") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    _children[distillation_id] = child
    task = {"command": command[3:], "teacher": body["teacher"], "started_at": int(time.time()), "status": "running"}
    write_json_atomic(directory / "task.json", task | {"pid": child.pid})
    return retrieve(workspace, distillation_id)


def retrieve(workspace: Workspace, distillation_id: str) -> dict[str, Any]:
    """One distillation: its task (running, succeeded, failed, interrupted), log tail and report."""
    directory = _root(workspace) / distillation_id
    if "/" in distillation_id or distillation_id.startswith(".") or not (directory / "task.json").is_file():
        raise not_found("distillation", distillation_id)
    task = _task_state(distillation_id, directory)
    report_path = directory / "distill.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    answers = directory / "answers.jsonl"
    kept = sum('"answer"' in line for line in answers.open(encoding="utf-8")) if answers.exists() else 0
    return {"object": "tunesmith.distillation", "id": distillation_id, "task": task, "answers": kept,
            "report": report}


def list_all(workspace: Workspace) -> list[dict[str, Any]]:
    root = _root(workspace)
    found = sorted((d.name for d in root.iterdir() if (d / "task.json").is_file()), reverse=True) if root.is_dir() else []
    return [retrieve(workspace, name) for name in found]


def _root(workspace: Workspace) -> Path:
    return workspace.home / "distill"  # where api.distill writes by default


def _task_state(distillation_id: str, directory: Path) -> dict[str, Any]:
    path = directory / "task.json"
    task = json.loads(path.read_text())
    if task["status"] == "running":
        child = _children.get(distillation_id)
        if child is not None and child.pid == task.get("pid"):
            code = child.poll()
            status = None if code is None else ("succeeded" if code == 0 else "failed")
        elif process_alive(task.get("pid")):
            status = None
        else:
            status = "succeeded" if (directory / "distill.json").exists() else "interrupted"
        if status:
            _children.pop(distillation_id, None)
            task = task | {"status": status, "finished_at": int(time.time())}
            write_json_atomic(path, task)
    log = directory / "task.log"
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []
    return {k: v for k, v in task.items() if k != "pid"} | {"log": lines[-LOG_TAIL_LINES:]}


