"""Writing an export so that nothing half-written is ever left under its name.

Every file goes into a hidden sibling directory (``.NAME.partial-PID``, same file system), which is
renamed onto the output name only when the export is complete; any error, a full disk included,
removes it. An existing output is replaced only with ``force``, and then only after the new one is
complete (moved aside, the new one renamed in, the old one deleted).
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

from tunesmith.errors import ExportError
from tunesmith.files import process_alive

MB = 1024 * 1024


def check_output(output: Path, force: bool) -> None:
    """Refuse, before any work, an output that exists and is not to be replaced."""
    if output.exists() and not output.is_dir():
        raise ExportError(f"{output} exists and is a file; give another -o directory")
    if output.exists() and any(output.iterdir()) and not force:
        raise ExportError(f"{output} already holds an export; give --force to replace it (the old one "
                          "is kept until the new one is complete) or another -o directory")


def check_space(output: Path, needed_bytes: int) -> None:
    """Refuse, before any work, when the disk holding ``output`` has less room than the export needs."""
    parent = _existing_parent(output)
    free = shutil.disk_usage(parent).free
    if free < needed_bytes:
        raise ExportError(f"not enough space to export into {output}: about {needed_bytes / MB:,.0f} MB "
                          f"needed, {free / MB:,.0f} MB free on the disk holding {parent}")


@contextlib.contextmanager
def staged(output: Path, force: bool = False) -> Iterator[Path]:
    """A fresh directory to write the export into; renamed onto ``output`` when the block succeeds,
    deleted when it raises."""
    check_output(output, force)
    output.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(output)
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
        _publish(partial, output)
    except BaseException as e:
        shutil.rmtree(partial, ignore_errors=True)
        if _disk_full(e):
            raise ExportError(f"the disk filled up while exporting into {output} ({e}); nothing was left "
                              "under that name. Free some space and export again.") from e
        if isinstance(e, OSError):
            raise ExportError(f"export into {output} failed: {e}; nothing was left under that name") from e
        raise


def _disk_full(error: BaseException) -> bool:
    """ENOSPC, also as the writers that are not Python report it (safetensors' Rust: "os error 28")."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    return "No space left on device" in str(error) or "os error 28" in str(error)


def _remove_abandoned(output: Path) -> None:
    """Staging directories of exports to ``output`` whose process is gone (killed half-way)."""
    for stale in output.parent.glob(f".{output.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)




def _publish(partial: Path, output: Path) -> None:
    if not output.exists():
        os.replace(partial, output)
        return
    old = output.parent / f".{output.name}.old-{os.getpid()}"
    os.replace(output, old)
    os.replace(partial, output)
    shutil.rmtree(old, ignore_errors=True)


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path
