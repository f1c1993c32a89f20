"""Sequence classifiers: a base model with a new classification head, and a trained run loaded back.

``AutoModelForSequenceClassification`` gives every architecture its own head: BERT-style encoders
classify from the pooled first token, causal LMs (Llama, Gemma, ...) from their last non-pad
token. ``pooling="mean"`` feeds the head the attention-masked mean of the token states instead,
which is what sentence encoders like all-MiniLM-L6-v2 were trained to produce. It is done with
forward hooks (see ``attach_mean_pooling``), not a custom model class, so the weights stay a
plain transformers checkpoint that any tool can load.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError


def load_sequence_classifier(path: str, labels: list[str], pooling: str = "model", pad_token_id: int | None = None,
                             local: bool = True):
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        path, local_files_only=local, use_safetensors=True, dtype=torch.float32, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    if model.config.pad_token_id is None:
        # Causal-LM heads find each row's last real token through the pad id.
        model.config.pad_token_id = pad_token_id
    if pooling == "mean":
        attach_mean_pooling(model)
    return model


def attach_mean_pooling(model) -> None:
    """Make the head read the attention-masked mean of the last hidden states.

    BERT-style models: the pooler's output is replaced by the mean, so the head is dropout +
    linear on the mean (the pooler's dense + tanh was never trained for sentence vectors and
    measurably slows learning). Models whose head reads the first token itself (RoBERTa,
    DistilBERT): the mean is written into the first position of the encoder output.
    """
    import torch

    backbone = model.base_model
    pooler, encoder = getattr(backbone, "pooler", None), getattr(backbone, "encoder", None)
    if pooler is None and encoder is None:
        raise ConfigError(f"pooling: mean needs an encoder model (BERT-style); {type(model).__name__} has none. "
                          "Use pooling: model (causal LMs classify from their last token).")
    state: dict[str, Any] = {}

    def remember_mask(module, args, kwargs):
        state["mask"] = kwargs.get("attention_mask")

    def masked_mean(hidden):
        mask = state.get("mask")
        weights = (mask if mask is not None else hidden.new_ones(hidden.shape[:2])).unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)

    def mean_as_pooled(module, args, output):
        return masked_mean(args[0])

    def mean_into_first(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
        hidden = torch.cat([masked_mean(hidden).unsqueeze(1), hidden[:, 1:]], dim=1)
        if isinstance(output, tuple):
            return (hidden,) + output[1:]
        output.last_hidden_state = hidden
        return output

    backbone.register_forward_pre_hook(remember_mask, with_kwargs=True)
    if pooler is not None:
        pooler.register_forward_hook(mean_as_pooled)
    else:
        encoder.register_forward_hook(mean_into_first)


def load_trained_classifier(final_dir: Path, base_path: str, labels: list[str], pooling: str, is_adapter: bool,
                            pad_token_id: int | None = None):
    """The classifier a run saved: full weights from ``model/``, or the base model plus ``adapter/``
    (LoRA and the trained head), merged for speed. ``pad_token_id``: the run's tokenizer's (a
    causal-LM head finds each row's last real token through it)."""
    if not is_adapter:
        return load_sequence_classifier(str(final_dir), labels, pooling)
    from peft import PeftModel

    base = load_sequence_classifier(base_path, labels, pooling, pad_token_id=pad_token_id)
    return PeftModel.from_pretrained(base, str(final_dir)).merge_and_unload()


LABELS_FILE = "labels.json"  # beside a classifier's weights: its label names and pooling


def read_labels(final_dir: Path) -> dict[str, Any]:
    return json.loads((final_dir / LABELS_FILE).read_text())
