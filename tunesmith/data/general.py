"""The general-purpose sets that ship with tunesmith in examples/general (README there: sources
and licences): conversations replayed against forgetting, and the probes that measure it."""
from __future__ import annotations

from pathlib import Path

from tunesmith.config import ReplaySettings
from tunesmith.errors import DataError

# The general set that ships with tunesmith (examples/general/README.md: sources and licences).
GENERAL_DIR = Path(__file__).resolve().parents[2] / "examples" / "general"


def replay_path(settings: ReplaySettings) -> Path:
    path = Path(settings.data) if settings.data else GENERAL_DIR / "replay.jsonl"
    if not path.is_file():
        raise DataError(f"replay.data: no such file: {path}" + ("" if settings.data else
                        " (the general set ships in the repository's examples/general; set replay.data to a copy)"))
    return path
