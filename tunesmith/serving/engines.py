"""Which engine serves each model (``tunesmith serve --engine auto|transformers|llama.cpp|vllm``),
and the GGUF files the llama.cpp engine serves, exported on first use.

- ``transformers``: every model, continuous batching (``models/batching.py``).
- ``llama.cpp``: language models with a GGUF: a pulled built-in model's own GGUF (the exact
  weights it was dequantized from), a run's ``tunesmith export`` (``gguf-adapter`` for a LoRA run:
  the base once in memory, the adapter switched per request; ``gguf`` for a fully fine-tuned
  one), a base model converted once into ``<home>/gguf/``. A run with no GGUF yet is exported at
  its first request, parity check included, and the export is kept in the run (``exports/``).
  What llama.cpp cannot serve (checkpoints, prompt-tuning, IA3 and DoRA adapters, a run whose
  export failed its parity check) answers through transformers; ``/v1/models`` says which.
- ``vllm``: every language model, on CUDA with vllm installed; refused elsewhere.
- ``auto``: vllm when it can run; else llama.cpp for the models that have a GGUF already (no
  request waits minutes for an export it did not ask for); else transformers.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunesmith.errors import ConfigError, ExportError, ParityFailed
from tunesmith.exports import DEFAULT_QUANT, ExportOptions, Thresholds, export_run, gguf
from tunesmith.exports.staging import staged
from tunesmith.models.llama_cpp import llama_cpp_installed
from tunesmith.models.pull import MANIFEST, source_gguf
from tunesmith.models.store import resolve_model
from tunesmith.runs import Run
from tunesmith.serving.names import Target
from tunesmith.workspace import Workspace

ENGINES = ("auto", "transformers", "llama.cpp", "vllm")
Log = Callable[[str], None]


def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def check_engine(engine: str) -> None:
    """Refuse, before the server starts, an engine this machine cannot run."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine == "llama.cpp" and not llama_cpp_installed():
        raise ConfigError("--engine llama.cpp needs llama-cpp-python: pip install 'tunesmith[gguf]', or "
                          "./scripts/build-llama-cpp.sh (builds it once, caches the wheel)")
    if engine == "vllm" and not (cuda_available() and vllm_installed()):
        missing = [what for what, ok in (("a CUDA GPU", cuda_available()), ("vllm (pip install vllm)", vllm_installed()))
                   if not ok]
        raise ConfigError(f"--engine vllm needs {' and '.join(missing)}; on this machine serve with --engine "
                          "transformers or llama.cpp (or auto)")


@dataclass(frozen=True)
class GGUFModel:
    """What the llama.cpp engine loads for a model: a GGUF file, a LoRA adapter on it (or none),
    and where the Hugging Face tokenizer (chat template, stop tokens) is."""

    file: Path
    adapter: Path | None
    tokenizer: str


class GGUFFiles:
    """The GGUF each language model is served from (see the module docstring)."""

    def __init__(self, workspace: Workspace, log: Log = print, thresholds: Thresholds = Thresholds()):
        self.workspace, self.log, self.thresholds = workspace, log, thresholds
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._identities: dict[tuple, str] = {}
        self._sources: dict[tuple, Path | None] = {}
        self.refused: dict[str, str] = {}  # model name -> why llama.cpp does not serve it

    def servable(self, target: Target) -> bool:
        """Whether llama.cpp can serve it, now or after an export."""
        if target.name in self.refused:
            return False
        if target.is_base:
            return True
        run = _run_of(target)
        if run is None:
            return False  # a checkpoint: no export of it
        if target.full_dir is not None:
            return True
        config = json.loads((target.adapter_dir / "adapter_config.json").read_text())
        return config.get("peft_type") == "LORA" and not config.get("use_dora")

    def found(self, target: Target) -> GGUFModel | None:
        """The GGUF on disk for it, without any work; None when there is none yet."""
        if not self.servable(target):
            return None
        if target.is_base:
            ref = resolve_model(target.base, self.workspace)
            file = self._own_gguf(Path(ref.path)) or self._converted(ref.path)
            return GGUFModel(file, None, ref.path) if file.is_file() else None
        run = _run_of(target)
        for export in _exports(run):
            adapter = export / "adapter.f16.gguf"
            bases = sorted(export.glob("base.*.gguf")) or sorted(export.glob("model.*.gguf"))
            if bases and (adapter.is_file() or not export.name.startswith("gguf-adapter")):
                return GGUFModel(bases[0], adapter if adapter.is_file() else None, str(run.final_dir))
        return None

    def prepare(self, target: Target) -> GGUFModel | None:
        """The GGUF for it, exported (or converted) now if there is none; None when llama.cpp
        cannot serve it (the reason is in ``refused``)."""
        with self._lock(target.name):
            done = self.found(target)
            if done is not None or not self.servable(target):
                return done
            try:
                if target.is_base:
                    self._convert_base(target)
                else:
                    self._export(_run_of(target), "gguf" if target.full_dir is not None else "gguf-adapter")
            except ParityFailed as e:
                self.refused[target.name] = f"its llama.cpp export failed the parity check: {e}"
            except ExportError as e:
                self.refused[target.name] = f"it could not be exported to GGUF: {e}"
            if target.name in self.refused:
                self.log(f"{target.name}: served through transformers, since {self.refused[target.name]}")
                return None
            return self.found(target)

    def _own_gguf(self, model_dir: Path) -> Path | None:
        """A built-in model's own GGUF (``source_gguf``, which hashes it): looked up once per pull."""
        manifest = model_dir / MANIFEST
        version = (str(model_dir), manifest.stat().st_mtime_ns if manifest.is_file() else 0)
        if version not in self._sources:
            self._sources[version] = source_gguf(model_dir, self.workspace) if model_dir.is_dir() else None
        return self._sources[version]

    def identity(self, file: Path) -> str:
        """A key for the GGUF's content: identical base files (each adapter export of one base has
        its own copy) share one model in memory. Hashed once per file version."""
        stat = file.stat()
        version = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._guard:
            if version not in self._identities:
                digest = hashlib.sha256()
                with open(file, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        digest.update(block)
                self._identities[version] = digest.hexdigest()
            return self._identities[version]

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def _export(self, run: Run, fmt: str) -> None:
        self.log(f"{run.id}: exporting to GGUF for llama.cpp (--format {fmt} --quant {DEFAULT_QUANT}), once; "
                 "the parity check against the trained model runs too")
        options = ExportOptions(format=fmt, quant=DEFAULT_QUANT, thresholds=self.thresholds)
        try:
            export_run(run.id, self.workspace, options, log=self.log)
        except ExportError as e:
            if "--no-check" not in str(e):  # anything but "no data to check it on"
                raise
            self.log(f"{run.id}: no parity data ({e}); exporting without the check")
            export_run(run.id, self.workspace, ExportOptions(format=fmt, quant=DEFAULT_QUANT, check=False, force=True),
                       log=self.log)

    def _converted(self, model_path: str) -> Path:
        key = hashlib.sha1(str(Path(model_path).resolve()).encode()).hexdigest()[:16]
        return self.workspace.home / "gguf" / f"{Path(model_path).name}-{key}" / f"model.{DEFAULT_QUANT}.gguf"

    def _convert_base(self, target: Target) -> None:
        ref = resolve_model(target.base, self.workspace)
        out = self._converted(ref.path)
        self.log(f"{target.name}: converting {ref.path} to GGUF ({DEFAULT_QUANT}) for llama.cpp, once, into {out.parent}")
        tools = gguf.converter_dir(self.workspace, self.log)
        with staged(out.parent, force=True) as dest:
            gguf.convert(Path(ref.path), dest / out.name, DEFAULT_QUANT, tools, self.log)


def _run_of(target: Target) -> Run | None:
    """The run a target's final weights belong to (a checkpoint has none)."""
    weights = target.full_dir or target.adapter_dir
    if weights is None or weights.name not in ("adapter", "model"):
        return None
    run = Run(weights.parent)
    return run if run.info_path.exists() else None


def _exports(run: Run) -> list[Path]:
    """The run's GGUF exports that passed their parity check (or were not checked), best first:
    an adapter export (its base shared with the run's siblings), q8_0 before other quants."""
    found = []
    for directory in sorted((run.dir / "exports").glob("*")):
        if not directory.is_dir() or not directory.name.startswith(("gguf", "ollama")):
            continue
        report = directory / "parity.json"
        if report.is_file() and not json.loads(report.read_text()).get("passed", True):
            continue
        found.append(directory)
    return sorted(found, key=lambda d: (not d.name.startswith("gguf-adapter"), DEFAULT_QUANT not in d.name, d.name))
