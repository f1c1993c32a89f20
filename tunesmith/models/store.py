"""Finding models: a built-in name, any pulled name, a local Hugging Face directory, or a hub id.

Resolution never touches the network for names and directories. A hub id (``org/name``) is
passed to transformers as is and only works where the network allows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunesmith.catalog import BUILTIN_MODELS
from tunesmith.errors import ModelNotFound
from tunesmith.models.pull import MANIFEST
from tunesmith.workspace import Workspace, is_safe_name


@dataclass(frozen=True)
class ModelRef:
    """A model that can be loaded: ``path`` is a directory, or a hub id when ``local`` is False."""

    name: str
    path: str
    local: bool = True


def resolve_model(ref: str, workspace: Workspace) -> ModelRef:
    candidate = Path(ref).expanduser()
    if candidate.is_dir():
        if not (candidate / "config.json").exists():
            raise ModelNotFound(f"{candidate} is a directory but not a Hugging Face model (no config.json)")
        return ModelRef(name=str(candidate.resolve()), path=str(candidate.resolve()))
    if is_safe_name(ref):
        pulled = workspace.model_dir(ref)
        if (pulled / MANIFEST).exists():
            return ModelRef(name=ref, path=str(pulled))
        if ref in BUILTIN_MODELS:
            raise ModelNotFound(f"model {ref!r} is not pulled yet; run: tunesmith models pull {ref}")
    if _looks_like_hub_id(ref):
        return ModelRef(name=ref, path=ref, local=False)
    known = ", ".join(sorted(BUILTIN_MODELS))
    raise ModelNotFound(f"unknown model {ref!r}: give a built-in name ({known}), a pulled model, "
                        "or the path of a local Hugging Face model directory")


def _looks_like_hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(is_safe_name(p) for p in parts) and not Path(ref).exists()


@dataclass(frozen=True)
class ModelListing:
    name: str
    description: str
    architecture: str
    parameters: str
    pulled: bool
    size_bytes: int | None
    path: str | None


def list_models(workspace: Workspace) -> list[ModelListing]:
    """Built-in models (pulled or not) and any other model pulled into the home."""
    listings = []
    for spec in BUILTIN_MODELS.values():
        directory = workspace.model_dir(spec.name)
        pulled = (directory / MANIFEST).exists()
        listings.append(ModelListing(spec.name, spec.description, spec.architecture, spec.parameters,
                                     pulled, _size(directory) if pulled else None, str(directory) if pulled else None))
    if workspace.models_dir.is_dir():
        for directory in sorted(workspace.models_dir.iterdir()):
            if directory.name in BUILTIN_MODELS or not (directory / MANIFEST).exists():
                continue
            manifest = json.loads((directory / MANIFEST).read_text())
            listings.append(ModelListing(directory.name, manifest.get("description", ""),
                                         manifest.get("architecture", "?"), manifest.get("parameters", "?"),
                                         True, _size(directory), str(directory)))
    return listings


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
