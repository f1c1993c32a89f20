"""The SFT recipe: supervised fine-tuning of a causal LM on conversations, LoRA or full.

Read top to bottom: prepare data → load model → build the Trainer → train (or resume) → save.
Built on transformers' Trainer and peft; what we add is assistant-only labels for any chat
template (training/tokenize.py), checkpoints that are complete or ignored (training/checkpoints.py),
and the run directory (runs.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from tunesmith.config import SFTConfig
from tunesmith.data.general import replay_path
from tunesmith.data.split import split_indices
from tunesmith.data.validate import ValidationReport, validate_file
from tunesmith.errors import DataError
from tunesmith.files import sha256_file
from tunesmith.models import adapters
from tunesmith.models.chat import ensure_chat_template
from tunesmith.models.collate import PadCollator, supports_loss_positions
from tunesmith.models.hardware import resolve_precision
from tunesmith.models.loading import count_parameters, load_causal_lm, load_tokenizer
from tunesmith.models.store import resolve_model
from tunesmith.runs import Run
from tunesmith.tracking.callback import hf_report_to, tracking_callbacks
from tunesmith.training.dataset import EncodedSet, encode_records
from tunesmith.training.distributed import is_main_process, world_size
from tunesmith.training.packed_attention import training_attention
from tunesmith.training.packing import PackedCollator, packed_rows, packing_is_exact
from tunesmith.training.replay import replay_examples
from tunesmith.training.sft_trainer import FusedLossTrainer
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
class RunResult:
    run: Run
    summary: dict[str, Any]
    model: Any = field(default=None, repr=False)  # the trained model, still in memory
    tokenizer: Any = field(default=None, repr=False)


def run_sft(config: SFTConfig, workspace: Workspace, run: Run | None = None,
            console: Console | None = None, name: str = "sft",
            callbacks: list | None = None, fresh: bool | None = None) -> RunResult:
    """Train a new run, or continue ``run`` from its last complete checkpoint."""
    console = console or Console(stderr=True)
    adapters.require_supported(config.method)
    prepare_process(config)
    model_ref = resolve_model(config.model, workspace)
    tokenizer = load_tokenizer(model_ref)
    if ensure_chat_template(tokenizer, config.chat_template):
        console.print(f"{model_ref.name} has no chat template; using ChatML", style="yellow", markup=False)
    if config.data.clean:
        config = clean_first(config, workspace, console)
    train_set, eval_set, hashes = prepare_data(config, tokenizer, console)

    run, resume_from = open_run(config, workspace, run, model_ref.name, model_ref.path, hashes, name, console, fresh)
    console.print(f"run {run.id}  ({run.dir})", markup=False, highlight=False)
    callbacks = tracking_callbacks(config, workspace, run, console) + (callbacks or [])

    precision = resolve_precision(config.training.precision)
    # Seed before the adapter is initialised: the Trainer seeds only in its constructor, after
    # get_peft_model has drawn the LoRA weights from whatever RNG state the process was in.
    from transformers import set_seed
    set_seed(config.training.seed)
    model = build_model(config, model_ref)
    trainable, total = count_parameters(model)
    console.print(f"{config.method}: {trainable:,} trainable of {total:,} parameters; precision {precision}; "
                  f"{len(train_set.examples)} training / {len(eval_set.examples)} validation examples")

    with training_attention(model, config.training.packing):
        trainer = build_trainer(config, model, tokenizer, train_set, eval_set, run, precision, console, callbacks)
        started = time.time()
        output = fit(trainer, run, resume_from)
    final_dir = save_final(trainer, tokenizer, run, config.method)
    if not is_main_process():  # rank 0 reports
        return RunResult(run, {}, trainer.model, tokenizer)
    summary = summarize(run, config, trainer, output, train_set, eval_set, time.time() - started, final_dir, precision)
    summary |= {"trainable_parameters": trainable, "total_parameters": total}
    finish_run(trainer, run, summary, final_dir)
    return RunResult(run, summary, trainer.model, tokenizer)


def prepare_data(config: SFTConfig, tokenizer, console: Console) -> tuple[EncodedSet, EncodedSet, dict[str, str]]:
    """Validate (every problem at once; nothing reaches the trainer otherwise), split and tokenize."""
    fmt = None if config.data.format == "auto" else config.data.format
    train_report = _validated(config.data.train, fmt, config.data.min_examples)
    hashes = {"train": sha256_file(config.data.train)}
    max_length, train_on = config.data.max_length, config.data.train_on
    if config.data.validation:
        eval_report = _validated(config.data.validation, fmt, 1)
        hashes["validation"] = sha256_file(config.data.validation)
        train_set = encode_records(train_report, tokenizer, max_length, train_on=train_on)
        eval_set = encode_records(eval_report, tokenizer, max_length, train_on=train_on)
    elif config.data.validation_fraction > 0:
        ratios = (1 - config.data.validation_fraction, config.data.validation_fraction)
        train_idx, eval_idx = split_indices([r.value for r in train_report.records], ratios, seed=config.training.seed)
        train_set = encode_records(train_report, tokenizer, max_length, train_idx, train_on)
        eval_set = encode_records(train_report, tokenizer, max_length, eval_idx, train_on)
    else:
        train_set, eval_set = encode_records(train_report, tokenizer, max_length, train_on=train_on), EncodedSet()
    if train_set.truncated or eval_set.truncated:
        console.print(f"[yellow]{train_set.truncated + eval_set.truncated} example(s) longer than "
                      f"max_length={max_length} were truncated[/]")
    dropped = train_set.dropped_lines + eval_set.dropped_lines
    if dropped:
        console.print(f"[yellow]{len(dropped)} example(s) had no assistant token left after truncation and "
                      f"were skipped (lines {', '.join(map(str, dropped[:10]))}{'...' if len(dropped) > 10 else ''})[/]")
    if not train_set.examples:
        raise DataError(f"{config.data.train}: no trainable example left")
    if config.replay:
        replayed = replay_examples(config.replay, tokenizer, max_length, len(train_set.examples), config.training.seed,
                                   train_on)
        hashes["replay"] = sha256_file(replay_path(config.replay))
        console.print(f"replay: {len(replayed.examples)} general examples mixed into {len(train_set.examples)} "
                      f"task examples ({config.replay.fraction:.0%} of training)", markup=False, highlight=False)
        train_set.examples += replayed.examples
    return train_set, eval_set, hashes


def check_data(config: SFTConfig) -> None:
    """Validate the data files (every problem at once) without tokenizing: what a launcher of
    several processes checks before starting them."""
    fmt = None if config.data.format == "auto" else config.data.format
    _validated(config.data.train, fmt, config.data.min_examples)
    if config.data.validation:
        _validated(config.data.validation, fmt, 1)
    if config.replay:
        _validated(str(replay_path(config.replay)), None, 1)


def _validated(path: str, fmt, min_examples: int) -> ValidationReport:
    report = validate_file(path, fmt, min_examples=min_examples)
    if not report.ok:
        raise DataError(report.summary(), report)
    if report.format.value not in ("chat", "prompt_completion", "instruction"):
        raise DataError(f"{path}: {report.format.value} data cannot be used for sft; "
                        "give chat, prompt/completion or instruction records")
    return report


def build_model(config: SFTConfig, model_ref):
    model = load_causal_lm(model_ref, quantization=adapters.quantization_config(config.method))
    if config.method == "full":
        return model
    return adapters.wrap(model, config.method, config.lora, config.prompt_learning)


def build_trainer(config: SFTConfig, model, tokenizer, train_set: EncodedSet, eval_set: EncodedSet,
                  run: Run, precision: str, console: Console, callbacks: list | None = None):
    """The Trainer, with the fused loss at loss positions where the model allows it (it takes
    ``logits_to_keep``), and packed rows where the model also keeps packed examples apart."""
    from transformers import PrinterCallback, Trainer

    t = config.training
    has_eval = bool(eval_set.examples)
    all_callbacks = standard_callbacks(run, t, has_eval, console) + (callbacks or [])
    layout = batch_layout(config, model, train_set, eval_set, tokenizer.pad_token_id)
    if layout.packed:
        console.print(f"packing: {len(train_set.examples)} examples into {len(layout.train)} rows of up to "
                      f"{t.pack_length} tokens; {layout.accumulation} row(s) per optimizer step"
                      + (f" in each of {world_size()} processes" if world_size() > 1 else ""),
                      markup=False, highlight=False)
    elif t.packing and layout.fused:
        console.print("packing off: this model does not keep packed examples apart", style="yellow")
    # Every trainable parameter takes part in every SFT forward, so DDP need not search the graph
    # for unused ones (the Trainer's default for a model without gradient checkpointing).
    args = training_arguments(t, run, precision, has_eval, prediction_loss_only=True, ddp_find_unused_parameters=False,
                              per_device_batch_size=layout.per_device, accumulation=layout.accumulation,
                              group_by_length=t.group_by_length and not layout.packed,
                              report_to=hf_report_to(config.tracking, run, console))
    trainer_class = FusedLossTrainer if layout.fused else Trainer
    trainer = trainer_class(model=model, args=args, train_dataset=layout.train, eval_dataset=layout.eval or None,
                            data_collator=layout.collator, processing_class=tokenizer, callbacks=all_callbacks)
    trainer.remove_callback(PrinterCallback)  # ProgressDisplay replaces its raw dict prints
    return trainer


@dataclass(frozen=True)
class BatchLayout:
    train: list
    eval: list
    collator: Any
    per_device: int
    accumulation: int
    packed: bool
    fused: bool


def batch_layout(config: SFTConfig, model, train_set: EncodedSet, eval_set: EncodedSet, pad_id: int) -> BatchLayout:
    """How examples become batches. Packed: one row of ``pack_length`` tokens per forward, with
    enough rows accumulated per optimizer step to hold about ``batch_size`` examples' tokens
    (fewer, bigger steps change the optimisation: 4 rows of 512 per step, 12 steps instead of 32,
    left a clearly worse held-out loss after one epoch in ../shared/research/perf-baseline.md).
    Otherwise: ``batch_size`` padded examples."""
    t = config.training
    fused = supports_loss_positions(model)  # not for prompt learning, which lengthens sequences in peft
    if fused and t.packing and packing_is_exact(model):
        mean_tokens = train_set.input_tokens / len(train_set.examples)
        rows_per_step = max(1, round(t.batch_size * mean_tokens / t.pack_length))
        return BatchLayout(packed_rows(train_set.examples, t.pack_length),
                           packed_rows(eval_set.examples, t.pack_length),
                           PackedCollator(pad_id), 1, rows_per_step * t.gradient_accumulation_steps,
                           packed=True, fused=True)
    return BatchLayout(train_set.examples, eval_set.examples, PadCollator(pad_id, fused),
                       t.batch_size, t.gradient_accumulation_steps, packed=False, fused=fused)


def summarize(run: Run, config: SFTConfig, trainer, output, train_set: EncodedSet, eval_set: EncodedSet,
              seconds: float, final_dir: Path, precision: str) -> dict[str, Any]:
    state = trainer.state
    evals = [h["eval_loss"] for h in state.log_history if "eval_loss" in h]
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    epochs = state.epoch or 0
    return {
        "run_id": run.id,
        "base_model": run.info().get("base_model"),
        "method": config.method,
        "precision": precision,
        "global_step": state.global_step,
        "epochs": round(epochs, 3),
        "train_examples": len(train_set.examples),
        "replay_fraction": config.replay.fraction if config.replay else 0.0,
        "validation_examples": len(eval_set.examples),
        "first_train_loss": losses[0] if losses else None,
        "last_train_loss": losses[-1] if losses else None,
        "mean_train_loss": output.training_loss,
        "best_eval_loss": min(evals) if evals else None,
        "last_eval_loss": evals[-1] if evals else None,
        "trained_loss_tokens": round(train_set.loss_tokens * epochs),
        "input_tokens_seen": state.num_input_tokens_seen,
        "train_seconds": round(seconds, 1),
        "input_tokens_per_second": round(state.num_input_tokens_seen / seconds, 1) if seconds else None,
        "final_dir": str(final_dir),
    }
