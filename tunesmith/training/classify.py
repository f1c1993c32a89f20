"""The classify recipe: a text classifier from an encoder or a causal LM, LoRA or full.

Read top to bottom: read and split the data → label set → model with a classification head →
Trainer (macro-F1 on validation picks the best checkpoint and drives early stopping) → save.
The label set travels with the weights (``labels.json`` and the model config's ``id2label``).
Built on ``AutoModelForSequenceClassification``: BERT-style encoders classify from the pooled
first token, causal LMs from their last token. ``pooling: mean`` swaps in the mean of the token
states (what sentence encoders such as all-MiniLM-L6-v2 were trained to produce).
"""
from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from tunesmith.config import ClassifyConfig
from tunesmith.confusion import confusion, scores
from tunesmith.data.formats import Format
from tunesmith.data.split import split_indices
from tunesmith.data.validate import validate_file
from tunesmith.errors import DataError
from tunesmith.files import sha256_file, write_json_atomic
from tunesmith.models import lexical
from tunesmith.models.classifier import LABELS_FILE, load_sequence_classifier
from tunesmith.models.hardware import resolve_precision
from tunesmith.models.loading import count_parameters, load_tokenizer
from tunesmith.models.store import ModelRef, resolve_model
from tunesmith.runs import Run
from tunesmith.tracking.callback import hf_report_to, tracking_callbacks
from tunesmith.training.distributed import is_main_process
from tunesmith.training.steps import (
    clean_first,
    finish_run,
    fit,
    open_run,
    prepare_process,
    save_final,
    standard_callbacks,
    training_arguments,
)
from tunesmith.workspace import Workspace


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    line: int


@dataclass
class ClassificationSplits:
    """The labelled examples a run trains and validates on (re-derived identically by eval's baselines)."""

    train: list[Example]
    validation: list[Example]
    labels: list[str] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClassifyResult:
    run: Run
    summary: dict[str, Any]


def run_classify(config: ClassifyConfig, workspace: Workspace, run: Run | None = None,
                 console: Console | None = None, name: str = "classify",
                 callbacks: list | None = None, fresh: bool | None = None) -> ClassifyResult:
    """Train a new classifier run, or continue ``run`` from its last complete checkpoint."""
    console = console or Console(stderr=True)
    prepare_process(config)
    model_ref = resolve_model(config.model, workspace)
    tokenizer = load_tokenizer(model_ref)
    if config.data.clean:
        config = clean_first(config, workspace, console)
    splits = read_splits(config)
    train_set, truncated = encode(splits.train, splits.labels, tokenizer, config.data.max_length)
    eval_set, truncated_eval = encode(splits.validation, splits.labels, tokenizer, config.data.max_length)
    if truncated + truncated_eval:
        console.print(f"[yellow]{truncated + truncated_eval} text(s) longer than max_length="
                      f"{config.data.max_length} were truncated[/]")

    run, resume_from = open_run(config, workspace, run, model_ref.name, model_ref.path, splits.hashes, name, console, fresh,
                                labels=splits.labels)
    console.print(f"run {run.id}  ({run.dir})", markup=False, highlight=False)
    callbacks = tracking_callbacks(config, workspace, run, console) + (callbacks or [])
    precision = resolve_precision(config.training.precision)
    from transformers import set_seed
    set_seed(config.training.seed)  # before the new head (and any adapter) is drawn
    model = build_classifier(config, model_ref, splits.labels, tokenizer)
    trainable, total = count_parameters(model)
    console.print(f"{config.method}: {trainable:,} trainable of {total:,} parameters; {len(splits.labels)} labels; "
                  f"precision {precision}; {len(train_set)} training / {len(eval_set)} validation examples")

    trainer = build_trainer(config, model, tokenizer, train_set, eval_set, splits, run, precision, console, callbacks)
    started = time.time()
    output = fit(trainer, run, resume_from)
    final_dir = save_final(trainer, tokenizer, run, config.method)
    if not is_main_process():  # rank 0 reports
        return ClassifyResult(run, {})
    meta = {"labels": splits.labels, "pooling": resolved_pooling(config, model_ref)}
    lexical_figures = {}
    if config.ensemble == "tfidf":
        lexical_figures = add_lexical_member(trainer, eval_set, splits, final_dir, config, console)
        meta["lexical_weight"] = lexical_figures["lexical_weight"]
    write_json_atomic(final_dir / LABELS_FILE, meta)
    summary = summarize(run, config, trainer, output, splits, time.time() - started, final_dir, precision)
    summary |= lexical_figures
    summary |= {"trainable_parameters": trainable, "total_parameters": total}
    finish_run(trainer, run, summary, final_dir)
    return ClassifyResult(run, summary)


# ── data ────────────────────────────────────────────────────────────────────────────────────

def read_splits(config: ClassifyConfig) -> ClassificationSplits:
    """Validated train / validation examples and the sorted label set. Labels are strings
    (integer labels become "0", "1", ...); a validation label unseen in training is an error."""
    train = _read(config.data.train, config.data.min_examples)
    hashes = {"train": sha256_file(config.data.train)}
    if config.data.validation:
        validation = _read(config.data.validation, 1)
        hashes["validation"] = sha256_file(config.data.validation)
    elif config.data.validation_fraction > 0:
        records = [{"label": e.label} for e in train]
        fraction = config.data.validation_fraction
        train_idx, eval_idx = split_indices(records, (1 - fraction, fraction), seed=config.training.seed,
                                            stratify="label")
        train, validation = [train[i] for i in train_idx], [train[i] for i in eval_idx]
    else:
        validation = []
    labels = sorted({e.label for e in train}, key=natural_key)
    if len(labels) < 2:
        raise DataError(f"{config.data.train}: a classifier needs at least 2 labels, found {labels}")
    unseen = [e for e in validation if e.label not in set(labels)]
    if unseen:
        raise DataError(f"{config.data.validation}: label(s) not in the training data: "
                        + ", ".join(f"line {e.line}: {e.label!r}" for e in unseen[:10]))
    return ClassificationSplits(train, validation, labels, hashes)


def read_examples(path: str | Path, min_examples: int = 1) -> list[Example]:
    """The ``text`` / ``label`` records of a classification file (every problem reported at once)."""
    return _read(path, min_examples)


def _read(path: str | Path, min_examples: int) -> list[Example]:
    report = validate_file(path, min_examples=min_examples)  # the format detected from the records
    if report.format not in (None, Format.CLASSIFICATION):
        # One clear sentence instead of a "missing field" per line for the wrong kind of file.
        raise DataError(f"{path}: these are {report.format.value} records; a classifier needs `text` and `label` "
                        "fields (CSV or JSONL)")
    if report.format is None:  # undetectable (e.g. a CSV without `label`): every problem, as classification
        report = validate_file(path, Format.CLASSIFICATION, min_examples=min_examples)
    if not report.ok:
        raise DataError(report.summary(), report)
    return [Example(str(r.value["text"]), str(r.value["label"]).strip(), r.line) for r in report.records]


def natural_key(label: str) -> tuple:
    """Sort "2" before "10", and words alphabetically.

    >>> sorted(["10", "2", "b", "a"], key=natural_key)
    ['2', '10', 'a', 'b']
    """
    return (0, int(label), "") if re.fullmatch(r"-?\d+", label) else (1, 0, label)


def encode(examples: list[Example], labels: list[str], tokenizer, max_length: int) -> tuple[list[dict], int]:
    if not examples:  # no validation split (validation_fraction: 0); fast tokenizers reject an empty batch
        return [], 0
    index = {label: i for i, label in enumerate(labels)}
    encoded = tokenizer([e.text for e in examples], truncation=True, max_length=max_length)["input_ids"]
    full = tokenizer([e.text for e in examples], truncation=False)["input_ids"]
    truncated = sum(len(f) > max_length for f in full)
    return [{"input_ids": ids, "labels": index[e.label]} for ids, e in zip(encoded, examples)], truncated


class ClassifyCollator:
    """Right-pads ``input_ids`` and stacks the integer labels."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, Any]]):
        import torch

        width = max(len(e["input_ids"]) for e in batch)
        ids = [e["input_ids"] + [self.pad_id] * (width - len(e["input_ids"])) for e in batch]
        mask = [[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in batch]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
                "labels": torch.tensor([e["labels"] for e in batch])}


# ── model ───────────────────────────────────────────────────────────────────────────────────

def is_causal_lm(model_path: str) -> bool:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    return bool(getattr(config, "is_decoder", False)) or any(a.endswith("ForCausalLM") for a in config.architectures or [])


def resolved_pooling(config: ClassifyConfig, model_ref: ModelRef) -> str:
    if config.pooling != "auto":
        return config.pooling
    return "model" if is_causal_lm(model_ref.path) else "mean"


def build_classifier(config: ClassifyConfig, model_ref: ModelRef, labels: list[str], tokenizer):
    model = load_sequence_classifier(model_ref.path, labels, resolved_pooling(config, model_ref),
                                     pad_token_id=tokenizer.pad_token_id, local=model_ref.local)
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = config.lora
        model = get_peft_model(model, LoraConfig(
            task_type="SEQ_CLS", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=lora.target_modules))
    return model


def build_trainer(config: ClassifyConfig, model, tokenizer, train_set, eval_set, splits: ClassificationSplits,
                  run: Run, precision: str, console: Console, callbacks: list | None = None):
    from transformers import PrinterCallback, Trainer

    has_eval = bool(eval_set)
    args = training_arguments(config.training, run, precision, has_eval, best_metric="eval_macro_f1",
                              greater_is_better=True, prediction_loss_only=False,
                              report_to=hf_report_to(config.tracking, run, console))
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set or None,
                      data_collator=ClassifyCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                      compute_metrics=_metrics_for(splits.labels),
                      compute_loss_func=class_weighted_loss(splits) if config.class_weights == "balanced" else None,
                      callbacks=standard_callbacks(run, config.training, has_eval, console) + (callbacks or []))
    trainer.remove_callback(PrinterCallback)
    return trainer


def add_lexical_member(trainer, eval_set, splits: ClassificationSplits, final_dir: Path, config: ClassifyConfig,
                       console: Console) -> dict[str, Any]:
    """``ensemble: tfidf``: fit TF-IDF + logistic regression on the training split, save it beside
    the weights and choose its mixture weight on the validation split (models/lexical.py)."""
    import numpy as np
    import torch

    started = time.time()
    member = lexical.fit([e.text for e in splits.train], [e.label for e in splits.train], splits.labels,
                         seed=config.training.seed)
    member.save(final_dir)
    figures: dict[str, Any] = {"lexical_fit_seconds": round(time.time() - started, 1)}
    if not eval_set:
        console.print("[yellow]ensemble: tfidf without a validation split: the lexical member is saved with weight 0 "
                      "(set data.validation_fraction to choose a weight)[/]")
        return figures | {"lexical_weight": 0.0}
    logits = trainer.predict(eval_set).predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    neural = torch.softmax(torch.as_tensor(np.asarray(logits), dtype=torch.float32), dim=-1).numpy()
    y = [e["labels"] for e in eval_set]
    weight, curve = lexical.mixture_weight(neural, member.predict_proba([e.text for e in splits.validation]), y)
    console.print(f"ensemble: TF-IDF member weight {weight} (validation accuracy {curve[0.0]:.2%} alone, "
                  f"{curve[weight]:.2%} mixed)")
    return figures | {"lexical_weight": weight, "validation_accuracy_encoder": curve[0.0],
                      "validation_accuracy_mixed": curve[weight]}


def class_weighted_loss(splits: ClassificationSplits):
    """Cross-entropy with each class weighted n / (k * n_class), scikit-learn's "balanced"."""
    import torch

    counts = Counter(e.label for e in splits.train)
    n, k = len(splits.train), len(splits.labels)
    weights = torch.tensor([n / (k * counts[label]) for label in splits.labels], dtype=torch.float32)

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return torch.nn.functional.cross_entropy(logits.float(), labels, weight=weights.to(logits.device))

    return loss


def _metrics_for(labels: list[str]):
    def compute(eval_pred) -> dict[str, float]:
        logits, label_ids = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        result = scores(confusion(label_ids, logits.argmax(-1), len(labels)), labels)
        return {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"]}

    return compute


def summarize(run: Run, config: ClassifyConfig, trainer, output, splits: ClassificationSplits, seconds: float,
              final_dir: Path, precision: str) -> dict[str, Any]:
    state = trainer.state
    evals = [h for h in state.log_history if "eval_macro_f1" in h]
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    best = max(evals, key=lambda h: h["eval_macro_f1"]) if evals else {}
    return {
        "run_id": run.id,
        "recipe": "classify",
        "base_model": run.info().get("base_model"),
        "method": config.method,
        "precision": precision,
        "labels": len(splits.labels),
        "global_step": state.global_step,
        "epochs": round(state.epoch or 0, 3),
        "train_examples": len(splits.train),
        "validation_examples": len(splits.validation),
        "first_train_loss": losses[0] if losses else None,
        "last_train_loss": losses[-1] if losses else None,
        "mean_train_loss": output.training_loss,
        "best_eval_macro_f1": best.get("eval_macro_f1"),
        "best_eval_accuracy": best.get("eval_accuracy"),
        "best_eval_step": best.get("step"),
        "last_eval_macro_f1": evals[-1]["eval_macro_f1"] if evals else None,
        "input_tokens_seen": state.num_input_tokens_seen,
        "train_seconds": round(seconds, 1),
        "input_tokens_per_second": round(state.num_input_tokens_seen / seconds, 1) if seconds else None,
        "final_dir": str(final_dir),
    }

