"""Checkpoints that are either complete or ignored.

The Trainer writes ``checkpoint-<step>/`` in place, file by file, and its own resume logic
takes the newest directory even when the process died half-way through writing it
(huggingface/transformers#35782). So after the Trainer has written a checkpoint we fsync its
files and then atomically write a marker listing every file and its size. On resume, only a
checkpoint whose marker matches its files, whose ``trainer_state.json`` parses and whose
safetensors headers read is used; newer, unsound ones are deleted (with what was wrong with
each logged), so the Trainer's rotation cannot mistake them for real checkpoints, and a run that
fails again and again (a full disk) does not pile up half-written copies. They used to be moved
into ``incomplete/``; a run directory that still has one loses it on its next resume.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

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
    """The newest sound checkpoint; every newer unsound one is deleted."""
    shutil.rmtree(directory.parent / "incomplete", ignore_errors=True)  # left by older versions
    for step, path in reversed(checkpoints_by_step(directory)):
        problems = problems_with(path)
        if not problems:
            return path
        shutil.rmtree(path, ignore_errors=True)
        log(f"skipped checkpoint-{step} ({'; '.join(problems)}); deleted it")
    return None


def free_incomplete(directory: Path) -> list[int]:
    """Delete the checkpoints that were never marked complete (a write that failed: a full
    disk, a checkpoint refused for non-finite weights); the steps deleted. Run after training
    stopped with an error, so that the space is back before anyone tries again."""
    freed = []
    for step, path in checkpoints_by_step(directory):
        if not (path / MARKER).exists():
            shutil.rmtree(path, ignore_errors=True)
            freed.append(step)
    return freed
