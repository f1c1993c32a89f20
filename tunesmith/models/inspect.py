"""Facts about a model directory read from its files, without loading the weights."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path


def parameter_count(model_dir: str | Path) -> int | None:
    """Parameters in the directory's safetensors files, from their headers (milliseconds, no weights read)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total
