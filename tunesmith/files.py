"""Writing files so readers never see half of one, and fingerprinting them."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def write_atomic(path: Path, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8) so that a reader never sees half a file: a temp file
    beside it, fsync, rename over the old one."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON (indented, ASCII) so that a reader never sees half a file."""
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def process_alive(pid: int | None) -> bool:
    """Whether a process with this id exists (one we may not signal counts: it exists)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
