"""The model names the server answers to, and what each stands for (a ``Target``).

Names come from what the home holds: pulled causal-LM base models, runs trained with
``tunesmith train`` (by run id), serving aliases (``<home>/aliases.json``), local model
directories given by name (``tunesmith serve --model NAME=DIR``: an exported merged model, any
Hugging Face causal-LM directory), and whatever a
``JobCatalog`` adds: the fine-tuned models and checkpoints of fine-tuning jobs, which serving
knows only through that Protocol (``JobModels``, in the jobs layer's ``served_models`` module,
implements it over the job database), so serving never imports the jobs layer.

Resolving a name reads a cache, scanned again when the home changes (the mtimes of its models,
runs and aliases), when a name is not found, or after ``RESCAN_SECONDS``: a chat request does not
read every job's checkpoints.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from tunesmith.catalog import BUILTIN_MODELS
from tunesmith.errors import ConfigError
from tunesmith.models.pull import MANIFEST
from tunesmith.models.store import list_models
from tunesmith.runs import all_runs
from tunesmith.serving.aliases import read_aliases
from tunesmith.training.recipes import recipe_of
from tunesmith.workspace import Workspace, is_safe_name

RESCAN_SECONDS = 30.0


@dataclass
class Target:
    """What a model name resolves to: a base model, optionally an adapter or full weights on top."""

    name: str
    base: str                       # base model name (built-in / pulled / directory)
    adapter_dir: Path | None = None
    full_dir: Path | None = None
    owned_by: str = "tunesmith"
    created: int = 0
    alias_of: str | None = None     # a serving alias: the model name it points at

    @property
    def is_base(self) -> bool:
        return self.adapter_dir is None and self.full_dir is None

    def present(self) -> bool:
        weights = self.full_dir or self.adapter_dir
        return weights is None or weights.exists()


def trained(name: str, base: str, final_dir: Path, created: int) -> Target:
    """A trained run's model: its ``adapter/`` on ``base``, or its fully fine-tuned ``model/``."""
    adapter = final_dir if final_dir.name == "adapter" else None
    return Target(name, base, adapter, final_dir if final_dir.name == "model" else None, created=created)


class JobCatalog(Protocol):
    """The models that fine-tuning jobs made, as the server needs them."""

    def targets(self) -> list[Target]:
        """The jobs' fine-tuned language models and their checkpoints."""

    def run_ids(self) -> set[str]:
        """Every run a job trained: those are served by the job's names, not their run ids."""

    def run_of(self, name: str) -> str | None:
        """The run a succeeded job's fine-tuned model name stands for (e.g. a retrained classifier)."""


class ModelNames:
    """Every name the server answers to, cached (see the module docstring)."""

    def __init__(self, workspace: Workspace, jobs: JobCatalog, directories: dict[str, Path] | None = None):
        self.workspace, self.jobs, self.directories = workspace, jobs, dict(directories or {})
        self._known: tuple[tuple, float, list[Target]] | None = None  # (home fingerprint, when, targets)

    def targets(self, fresh: bool = False) -> list[Target]:
        """Every model name the server answers to (cached; ``fresh`` scans the home again)."""
        fingerprint, known = self._fingerprint(), self._known
        if fresh or known is None or known[0] != fingerprint or time.monotonic() - known[1] > RESCAN_SECONDS:
            known = self._known = (fingerprint, time.monotonic(), self._scan())
        return known[2]

    def forget(self) -> None:
        """Drop the cache (after a delete, or a change this process made)."""
        self._known = None

    def _fingerprint(self) -> tuple:
        return tuple(_mtime(p) for p in (self.workspace.models_dir, self.workspace.runs_dir, self.workspace.aliases_path))

    def _scan(self) -> list[Target]:
        found = [Target(m.name, m.name, owned_by="system") for m in list_models(self.workspace)
                 if m.pulled and "causal" in self._task(m.name)]
        found += self.jobs.targets()
        found += self._cli_runs(self.jobs.run_ids())
        taken = {t.name for t in found}
        found += [Target(name, str(path), owned_by="local") for name, path in self.directories.items() if name not in taken]
        return found + self._aliases(found)

    def _aliases(self, found: list[Target]) -> list[Target]:
        """Serving aliases (set when a retrained model is promoted): a stable name clients call,
        pointing at whichever model won the last comparison."""
        by_name = {t.name: t for t in found}
        return [replace(by_name[model], name=alias, owned_by="tunesmith", alias_of=model)
                for alias, model in read_aliases(self.workspace).items() if model in by_name and alias not in by_name]

    def _cli_runs(self, job_runs: set[str]) -> list[Target]:
        """Language-model runs trained with ``tunesmith train`` (not by a job), named by run id."""
        found = []
        for run in all_runs(self.workspace):
            info = run.info()
            if (run.id in job_runs or info.get("status") != "succeeded" or not recipe_of(run).generates
                    or not run.final_dir.exists()):
                continue
            found.append(trained(run.id, info["base_model"], run.final_dir, int(info.get("finished_at") or 0)))
        return found

    def _task(self, name: str) -> str:
        spec = BUILTIN_MODELS.get(name)
        if spec is not None:
            return spec.task
        manifest = json.loads((self.workspace.model_dir(name) / MANIFEST).read_text())
        return manifest.get("task", "causal-lm")


def local_directories(specs: list[str]) -> dict[str, Path]:
    """``NAME=DIR`` options (``tunesmith serve --model``): each a language-model directory, checked now."""
    found: dict[str, Path] = {}
    for spec in specs:
        name, sep, directory = spec.partition("=")
        path = Path(directory).expanduser().resolve()
        if not sep or not is_safe_name(name) or not directory:
            raise ConfigError(f"--model {spec!r}: give NAME=DIR (a name of letters, digits, '.', '-', '_' and a directory)")
        if name in found:
            raise ConfigError(f"--model {spec!r}: the name {name!r} is given twice")
        if not (path / "config.json").is_file():
            raise ConfigError(f"--model {spec!r}: {path} is not a Hugging Face model directory (no config.json)")
        architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
        if not any(a.endswith("ForCausalLM") for a in architectures):
            raise ConfigError(f"--model {spec!r}: {path} holds a {', '.join(architectures) or 'model'} model, not a "
                              "language model; a classifier is served through its run")
        found[name] = path
    return found


def named(targets: list[Target], name: str) -> Target | None:
    return next((t for t in targets if t.name == name), None)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
