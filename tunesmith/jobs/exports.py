"""Exports of a run for the web UI: the ones already written under ``runs/<id>/exports/`` (their
files, sizes and parity verdicts), and one started in the background.

An export is ``tunesmith export RUN --format F [--quant Q] --json`` in a child process, for the
reasons an evaluation is one (jobs/evaluations.py): it loads the model, merges, converts and
generates for minutes, and a crash or an out-of-memory kill must not take the server with it.
Its state lives beside the exports (``exports/task.json``; the child's log in ``task.log``, its
JSON result in ``task.out``), so a restarted server still knows it. One export of a run at a
time: two would race for the same disk space and, for the same format, the same output.

What a request asks for is checked here, before any process starts: the format exists and fits
the run (a classifier exports as merged or onnx, a language model as merged, gguf, ollama or
gguf-adapter), a quantisation is one of ``tunesmith.exports.QUANTS`` and only for GGUF formats,
and an export already there is replaced only with ``force``. Everything else (weights, base
model, llama.cpp, disk space) the child checks before it writes, and its log says what failed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tunesmith.errors import APIError, ExportError, ParityFailed
from tunesmith.exports import DEFAULT_QUANT, FORMATS, QUANTS, check_choice, formats_for
from tunesmith.files import process_alive, write_json_atomic
from tunesmith.runs import Run, requested_run
from tunesmith.workspace import Workspace

LOG_TAIL_LINES = 40

TEXT_FILES = ("parity.md", "README.md", "Modelfile")  # what an export's page may show as text
PARITY_PARAMETERS = ("passed", "identical", "examples", "runtime", "data", "failures", "metrics", "created_at")
PARITY_FAILED_EXIT = ParityFailed.exit_code  # the export was written but answers differently
# Children of this server process, by run id: their exit status is read here (and reaped).
_children: dict[str, subprocess.Popen] = {}
_starting = threading.Lock()  # the "one at a time" check and the spawn, as one step


def exports(workspace: Workspace, run_id: str) -> dict[str, Any]:
    """The run's exports on disk, newest first, the export task (none, running, succeeded,
    failed, parity_failed, interrupted) with the tail of its log, and the formats it can take."""
    run = _run(workspace, run_id)
    return {"object": "tunesmith.exports", "run": run.id, "formats": formats_for(run),
            "quants": list(QUANTS), "default_quant": DEFAULT_QUANT, "task": _task_state(run), "data": _listing(run)}


def start(workspace: Workspace, run_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Start ``tunesmith export`` on a finished run; ``body``: ``format``, ``quant`` (GGUF
    formats; default q8_0), ``force`` (replace an export already there)."""
    run = _run(workspace, run_id)
    fmt, quant = _choice(run, body)
    if run.info().get("status") != "succeeded":
        raise APIError(409, f"run {run.id} has not finished training (status {run.info().get('status')}).",
                       "invalid_state", None)
    name = fmt + (f"-{quant}" if quant else "")
    with _starting:
        if _task_state(run)["status"] == "running":
            raise APIError(409, f"an export of {run.id} is already running.", "invalid_state", None)
        output = _exports_dir(run) / name
        if output.is_dir() and any(output.iterdir()) and not body.get("force"):
            raise APIError(409, f"run {run.id} already has a {name} export; replace it with force: true "
                           "(the old one is kept until the new one is complete).", "already_exists", "force")
        _spawn(workspace, run, fmt, quant, name, bool(body.get("force")))
    return exports(workspace, run.id)


def export_text(workspace: Workspace, run_id: str, name: str, filename: str) -> str:
    """A text file of one of the run's exports (its parity report, model card or Modelfile). ``name``
    must be one the listing shows: a request never names a path."""
    run = _run(workspace, run_id)
    if name not in {e["name"] for e in _listing(run)}:
        raise APIError(404, f"run {run.id} has no export named '{name}'.", "export_not_found", "name")
    if filename not in TEXT_FILES or not (_exports_dir(run) / name / filename).is_file():
        raise APIError(404, f"the {name} export of {run.id} has no {filename!r} (one of {', '.join(TEXT_FILES)}).",
                       "export_file_not_found", "file")
    return (_exports_dir(run) / name / filename).read_text(encoding="utf-8", errors="replace")


# ── checking the request ────────────────────────────────────────────────────────────────────
def _choice(run: Run, body: dict[str, Any]) -> tuple[str, str | None]:
    """The format and quantisation asked for, or a 400 naming the field that does not fit (the
    rules ``tunesmith export`` applies: ``tunesmith.exports.check_choice``)."""
    try:
        return body.get("format"), check_choice(run, body.get("format"), body.get("quant"))
    except ExportError as e:
        raise APIError(400, str(e).rstrip(".") + ".", "invalid_value", e.param) from e


def _spawn(workspace: Workspace, run: Run, fmt: str, quant: str | None, name: str, force: bool) -> None:
    command = [sys.executable, "-m", "tunesmith", "export", run.id, "--format", fmt,
               *(["--quant", quant] if quant else []), *(["--force"] if force else []), "--json"]
    folder = _exports_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    task = {"command": command[3:], "format": fmt, "quant": quant, "name": name,
            "started_at": int(time.time()), "status": "running"}
    # stdout carries only the --json result; the progress and any error go to stderr, the log.
    with open(folder / "task.log", "w", encoding="utf-8") as log, open(folder / "task.out", "w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=log, stdin=subprocess.DEVNULL,
                                 env=dict(os.environ, TUNESMITH_HOME=str(workspace.home), COLUMNS="110"))
    _children[run.id] = child
    write_json_atomic(folder / "task.json", task | {"pid": child.pid})


# ── the exports on disk ─────────────────────────────────────────────────────────────────────
def _listing(run: Run) -> list[dict[str, Any]]:
    folder = _exports_dir(run)
    if not folder.is_dir():
        return []
    # Hidden directories are an export being written (``.NAME.partial-PID``) or replaced (``.old``).
    found = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return [_describe(d) for d in sorted(found, key=lambda d: d.stat().st_mtime, reverse=True)]


def _describe(directory: Path) -> dict[str, Any]:
    fmt, quant = _format_of(directory.name)
    files = [{"name": p.relative_to(directory).as_posix(), "bytes": p.stat().st_size}
             for p in sorted(directory.rglob("*")) if p.is_file()]
    return {"object": "tunesmith.export", "name": directory.name, "format": fmt, "quant": quant,
            "created_at": int(directory.stat().st_mtime), "bytes": sum(f["bytes"] for f in files), "files": files,
            "parity": _parity_summary(directory / "parity.json"),
            "texts": [f for f in TEXT_FILES if (directory / f).is_file()]}


def _format_of(name: str) -> tuple[str | None, str | None]:
    """``gguf-q4_k_m`` → (gguf, q4_k_m); ``gguf-adapter`` → (gguf-adapter, None); a directory
    someone else put there → (None, None).

    >>> _format_of("gguf-adapter-q8_0"), _format_of("merged"), _format_of("notes")
    (('gguf-adapter', 'q8_0'), ('merged', None), (None, None))
    """
    if name in FORMATS:
        return name, None
    for fmt in sorted(FORMATS, key=len, reverse=True):  # gguf-adapter-… before gguf-…
        if name.startswith(fmt + "-") and name[len(fmt) + 1:] in QUANTS:
            return fmt, name[len(fmt) + 1:]
    return None, None


def _parity_summary(path: Path) -> dict[str, Any] | None:
    """The verdict of parity.json without its examples (null: not checked, or unreadable)."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {k: report.get(k) for k in PARITY_PARAMETERS}


def _exports_dir(run: Run) -> Path:
    return run.dir / "exports"  # where tunesmith.exports writes <format>[-<quant>]/ by default


# ── the task ────────────────────────────────────────────────────────────────────────────────
def _task_state(run: Run) -> dict[str, Any]:
    path = _exports_dir(run) / "task.json"
    if not path.exists():
        return {"status": "none"}
    task = json.loads(path.read_text())
    if task["status"] == "running":
        task = _settle(run, task, path)
    log = _exports_dir(run) / "task.log"
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []
    return {k: v for k, v in task.items() if k != "pid"} | {"log": lines[-LOG_TAIL_LINES:]}


def _settle(run: Run, task: dict[str, Any], path: Path) -> dict[str, Any]:
    """Record how a finished child ended: by its exit status if this process started it (0, 7 for
    a parity failure, anything else a failure), else (a restarted server) by what it left on disk."""
    child = _children.get(run.id)
    if child is not None and child.pid == task.get("pid"):
        code = child.poll()
        if code is None:
            return task
        _children.pop(run.id, None)
        status = {0: "succeeded", PARITY_FAILED_EXIT: "parity_failed"}.get(code, "failed")
    elif process_alive(task.get("pid")):
        return task
    else:
        status = _outcome_on_disk(_exports_dir(run) / task["name"], task["started_at"])
    task = task | {"status": status, "finished_at": int(time.time()), "result": _result(_exports_dir(run))}
    write_json_atomic(path, task)
    return task


def _outcome_on_disk(output: Path, started_at: int) -> str:
    report = output / "parity.json"
    if report.exists() and report.stat().st_mtime >= started_at:
        return "succeeded" if (_parity_summary(report) or {}).get("passed") else "parity_failed"
    card = output / "README.md"
    return "succeeded" if card.exists() and card.stat().st_mtime >= started_at else "interrupted"


def _result(folder: Path) -> dict[str, Any] | None:
    """What ``--json`` printed (output, files, seconds), without the parity report the listing
    summarises; null when the child printed none (it failed, or was killed)."""
    try:
        result = json.loads((folder / "task.out").read_text())
    except (OSError, ValueError):
        return None
    return {k: v for k, v in result.items() if k != "parity"} if isinstance(result, dict) else None




def _run(workspace: Workspace, run_id: str) -> Run:
    return requested_run(run_id, workspace)
