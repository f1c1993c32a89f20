"""Checkpoints that are either complete or ignored.

The Trainer writes ``checkpoint-<step>/`` in place, file by file, and its own resume logic
takes the newest directory even when the process died half-way through writing it
(huggingface/transformers#35782). So after the Trainer has written a checkpoint we fsync its
files and then atomically write a marker listing every file and its size. On resume, only a
checkpoint whose marker matches its files, whose ``trainer_state.json`` parses and whose
safetensors headers read is used; newer, unmarked ones are moved aside into ``incomplete/``
(never deleted), so the Trainer's rotation cannot mistake them for real checkpoints.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

MARKER = "tunesmith-complete.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def mark_complete(checkpoint: Path, step: int) -> None:
    files = {}
    for path in sorted(checkpoint.rglob("*")):
        if path.is_file() and path.name != MARKER:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            files[str(path.relative_to(checkpoint))] = path.stat().st_size
    tmp = checkpoint / f".{MARKER}.tmp"
    with open(tmp, "w") as f:
        json.dump({"step": step, "files": files, "written_at": time.time()}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, checkpoint / MARKER)
    _fsync_dir(checkpoint)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def problems_with(checkpoint: Path) -> list[str]:
    """Why a checkpoint cannot be resumed from (empty when it is sound)."""
    marker = checkpoint / MARKER
    if not marker.exists():
        return ["no completeness marker (the write was interrupted)"]
    try:
        listed = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError):
        return ["unreadable completeness marker"]
    problems = [f"{name}: missing or wrong size" for name, size in listed.items()
                if not (checkpoint / name).is_file() or (checkpoint / name).stat().st_size != size]
    if not problems:
        problems += _unreadable(checkpoint)
    return problems


def _unreadable(checkpoint: Path) -> list[str]:
    from safetensors import safe_open

    problems = []
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError) as e:
        problems.append(f"trainer_state.json: {e}")
    for weights in checkpoint.glob("*.safetensors"):
        try:
            with safe_open(str(weights), framework="pt"):
                pass
        except Exception as e:  # safetensors raises its own error types for bad headers
            problems.append(f"{weights.name}: {e}")
    return problems


def checkpoints_by_step(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return sorted(found)


def last_complete_checkpoint(directory: Path, log=print) -> Path | None:
    """The newest sound checkpoint; every newer unsound one is moved into ``incomplete/``."""
    for step, path in reversed(checkpoints_by_step(directory)):
        problems = problems_with(path)
        if not problems:
            return path
        quarantine = directory.parent / "incomplete" / f"{path.name}-{int(time.time())}"
        quarantine.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), quarantine)
        log(f"skipped checkpoint-{step} ({'; '.join(problems)}); moved to {quarantine}")
    return None


class CompletenessMarker(TrainerCallback):
    """Marks each checkpoint complete right after the Trainer has finished writing it."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                mark_complete(checkpoint, state.global_step)
