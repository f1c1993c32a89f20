"""A run directory: what one training run leaves behind, and how to find it again.

    runs/<id>/
      config.yaml        the resolved config
      run.json           status, base model, data hashes, timestamps
      metrics.jsonl      one JSON object per log / evaluation
      checkpoints/       checkpoint-<step>/ (+ a completeness marker, see training/checkpoints.py)
      adapter/ | model/  the final LoRA adapter or full model (safetensors)
      summary.json       final figures
      eval/              evaluation reports (report.json, report.md)
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import RunNotFound, not_found
from tunesmith.files import write_json_atomic
from tunesmith.workspace import Workspace, is_safe_name


@dataclass(frozen=True)
class Run:
    dir: Path

    @property
    def id(self) -> str:
        return self.dir.name

    @property
    def config_path(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def info_path(self) -> Path:
        return self.dir / "run.json"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def summary_path(self) -> Path:
        return self.dir / "summary.json"

    @property
    def eval_dir(self) -> Path:
        return self.dir / "eval"


    @property
    def final_dir(self) -> Path:
        """Where the trained weights are: ``adapter/`` for LoRA, ``model/`` for full fine-tuning."""
        adapter = self.dir / "adapter"
        return adapter if adapter.exists() or self.info().get("method", "lora") != "full" else self.dir / "model"

    def info(self) -> dict[str, Any]:
        return json.loads(self.info_path.read_text()) if self.info_path.exists() else {}

    def summary(self) -> dict[str, Any]:
        return json.loads(self.summary_path.read_text()) if self.summary_path.exists() else {}

    def update_info(self, **fields: Any) -> None:
        info = self.info() | fields
        write_json_atomic(self.info_path, info)


def new_run(workspace: Workspace, name: str) -> Run:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:48] or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = workspace.run_dir(f"{stamp}-{slug}")
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = workspace.run_dir(f"{stamp}-{slug}-{suffix}")
    run_dir.mkdir(parents=True)
    return Run(run_dir)


def all_runs(workspace: Workspace) -> list[Run]:
    """Every run directory in the home, oldest first (ids start with their time)."""
    if not workspace.runs_dir.is_dir():
        return []
    return [Run(d) for d in sorted(workspace.runs_dir.iterdir()) if (d / "run.json").exists()]


def find_run(ref: str, workspace: Workspace) -> Run:
    """A run by directory path, id, or unique id prefix/suffix (e.g. the name part)."""
    path = Path(ref).expanduser()
    if (path / "run.json").exists():
        return Run(path.resolve())
    if is_safe_name(ref) and workspace.runs_dir.is_dir():
        exact = workspace.run_dir(ref)
        if (exact / "run.json").exists():
            return Run(exact)
        matches = sorted(d for d in workspace.runs_dir.iterdir()
                         if (d / "run.json").exists() and (d.name.startswith(ref) or d.name.endswith(ref)))
        if matches:
            return Run(matches[-1])  # the newest run with that name
    raise RunNotFound(f"no run {ref!r}: give a run directory or an id from {workspace.runs_dir}")



def requested_run(run_id: str, workspace: Workspace) -> Run:
    """The run a request names (the server's routes): by id or name in this home only, never a
    path from the request; a 404 in OpenAI's shape otherwise."""
    try:
        run = find_run(run_id, workspace)
    except RunNotFound:
        raise not_found("run", run_id) from None
    if run.dir.parent.resolve() != workspace.runs_dir.resolve():
        raise not_found("run", run_id)
    return run

def is_run_ref(ref: str, workspace: Workspace) -> bool:
    try:
        find_run(ref, workspace)
        return True
    except RunNotFound:
        return False
