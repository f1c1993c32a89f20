"""The on-disk layout of a tunesmith home: pulled models and training runs.

This is the only module that builds paths inside the home. The home is passed in; it is read
from ``TUNESMITH_HOME`` (default ``~/.cache/tunesmith``) in exactly one function, ``default_home``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_home() -> Path:
    return Path(os.environ.get("TUNESMITH_HOME") or Path.home() / ".cache" / "tunesmith").expanduser()


def is_safe_name(name: str) -> bool:
    """True for names that can be used as one path component (no separators, no '..')."""
    return bool(_SAFE_NAME.match(name)) and ".." not in name


@dataclass(frozen=True)
class Workspace:
    home: Path

    @classmethod
    def default(cls) -> "Workspace":
        return cls(default_home())

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def downloads_dir(self) -> Path:
        return self.home / "downloads"

    def model_dir(self, name: str) -> Path:
        return self.models_dir / name

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id
