"""A run's weights as a plain Hugging Face directory: the adapter merged into its base.

The directory is what ``AutoModelForCausalLM.from_pretrained`` (or, for a classifier,
``AutoModelForSequenceClassification``) loads with nothing of tunesmith installed: safetensors, the
tokenizer the run was trained with and its chat template, and a generation config whose
``eos_token_id`` lists every token that ends an assistant turn — the stop-token mismatch peers'
exports are known for (an exported model that runs on past ``<|im_end|>``) is fixed here, and the
parity check catches it if it ever comes back.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from tunesmith.errors import ExportError
from tunesmith.models import engine
from tunesmith.models.adapters import PROMPT_LEARNING
from tunesmith.models.chat import stop_token_ids
from tunesmith.models.classifier import LABELS_FILE
from tunesmith.runs import Run
from tunesmith.workspace import Workspace

Log = Callable[[str], None]


def check_mergeable(run: Run) -> None:
    method = run.info().get("method")
    if method in PROMPT_LEARNING:
        raise ExportError(f"run {run.id} trained a {method} adapter (learned virtual tokens), which cannot be "
                          "merged into the weights, so it cannot be exported; serve it with `tunesmith serve`, "
                          "or train with method: lora to export")


def write_language_model(run: Run, workspace: Workspace, dest: Path, log: Log) -> list[str]:
    """The run's language model, adapter merged, in full precision, written into ``dest``."""
    import torch

    check_mergeable(run)
    log(f"merging run {run.id}'s {run.info().get('method')} weights into {run.info().get('base_model')} (fp32)")
    loaded = engine.load_run(run, workspace, merge=True, dtype=torch.float32)
    _plain_config(loaded.model.config, run)
    generation = loaded.model.generation_config
    generation.eos_token_id = stop_token_ids(loaded.tokenizer)
    generation.pad_token_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None \
        else generation.eos_token_id[0]
    generation.do_sample = False
    loaded.model.save_pretrained(str(dest), safe_serialization=True)
    loaded.tokenizer.save_pretrained(str(dest))
    return sorted(p.name for p in dest.iterdir())


def write_classifier(run: Run, workspace: Workspace, dest: Path, log: Log):
    """A classify run's model, adapter and head merged, with its label map in config.json and
    labels.json; returns the loaded classifier (the parity check's reference)."""
    log(f"merging classify run {run.id} into a plain sequence classifier")
    loaded = engine.load_classifier(run, workspace)
    config = loaded.model.config
    config.id2label = dict(enumerate(loaded.labels))
    config.label2id = {label: i for i, label in enumerate(loaded.labels)}
    _plain_config(config, run)
    loaded.model.save_pretrained(str(dest), safe_serialization=True)
    loaded.tokenizer.save_pretrained(str(dest))
    meta = json.loads((run.final_dir / LABELS_FILE).read_text())
    (dest / LABELS_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return loaded


def _plain_config(config, run: Run) -> None:
    """No path of the training machine in the shipped config."""
    for key in ("_name_or_path", "_model_name_or_path"):
        value = getattr(config, key, None)
        if isinstance(value, str) and Path(value).is_absolute():
            setattr(config, key, run.info().get("base_model") or run.id)


def weights_bytes(run: Run, workspace: Workspace) -> int:
    """The size of the run's full-precision weights on disk: what a merged export needs."""
    if run.info().get("method") == "full":
        return _safetensors_bytes(run.final_dir)
    try:
        base = Path(engine.base_model_of(run, workspace).path)
    except Exception as e:  # noqa: BLE001 — the base model is gone: say so before any work
        raise ExportError(f"cannot export run {run.id}: its base model {run.info().get('base_model')!r} is "
                          f"missing: {e}") from e
    if not base.is_dir():
        raise ExportError(f"cannot export run {run.id}: its base model {run.info().get('base_model')!r} is not "
                          "a local directory; exports work from local weights only")
    return _safetensors_bytes(base) + _safetensors_bytes(run.final_dir)


def _safetensors_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))
