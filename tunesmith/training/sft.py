"""The SFT recipe: supervised fine-tuning of a causal LM on conversations, LoRA or full.

Read top to bottom: prepare data → load model → build the Trainer → train (or resume) → save.
Built on transformers' Trainer and peft; what we add is assistant-only labels for any chat
template (training/tokenize.py), checkpoints that are complete or ignored (training/checkpoints.py),
and the run directory (runs.py).
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from tunesmith.config import SFTConfig, save_config
from tunesmith.data.split import split_indices
from tunesmith.data.validate import ValidationReport, validate_file
from tunesmith.errors import DataError, TunesmithError
from tunesmith.models.loading import count_parameters, load_causal_lm, load_tokenizer, quiet_transformers
from tunesmith.models.store import resolve_model
from tunesmith.files import sha256_file, write_json_atomic
from tunesmith.runs import Run, new_run
from tunesmith.training.checkpoints import CompletenessMarker, last_complete_checkpoint
from tunesmith.training.callbacks import MetricsLog, ProgressDisplay
from tunesmith.training.dataset import EncodedSet, PadCollator, encode_records, supports_loss_positions
from tunesmith.training.hardware import resolve_precision
from tunesmith.training.tokenize import ensure_chat_template
from tunesmith.workspace import Workspace


@dataclass(frozen=True)
class RunResult:
    run: Run
    summary: dict[str, Any]
    model: Any = field(default=None, repr=False)  # the trained model, still in memory
    tokenizer: Any = field(default=None, repr=False)


def run_sft(config: SFTConfig, workspace: Workspace, run: Run | None = None,
            console: Console | None = None, name: str = "sft") -> RunResult:
    """Train a new run, or continue ``run`` from its last complete checkpoint."""
    console = console or Console(stderr=True)
    _quiet_libraries()
    if config.training.threads:
        import torch
        torch.set_num_threads(config.training.threads)

    model_ref = resolve_model(config.model, workspace)
    tokenizer = load_tokenizer(model_ref)
    if ensure_chat_template(tokenizer, config.chat_template):
        console.print(f"{model_ref.name} has no chat template; using ChatML", style="yellow", markup=False)
    if config.data.clean:
        config = clean_first(config, workspace, console)
    train_set, eval_set, hashes = prepare_data(config, tokenizer, console)

    run, resume_from = _open_run(config, workspace, run, model_ref.name, model_ref.path, hashes, name, console)
    console.print(f"run {run.id}  ({run.dir})", markup=False, highlight=False)

    precision = resolve_precision(config.training.precision)
    # Seed before the adapter is initialised: the Trainer seeds only in its constructor, after
    # get_peft_model has drawn the LoRA weights from whatever RNG state the process was in.
    from transformers import set_seed
    set_seed(config.training.seed)
    model = build_model(config, model_ref)
    trainable, total = count_parameters(model)
    console.print(f"{config.method}: {trainable:,} trainable of {total:,} parameters; precision {precision}; "
                  f"{len(train_set.examples)} training / {len(eval_set.examples)} validation examples")

    trainer = build_trainer(config, model, tokenizer, train_set, eval_set, run, precision, console)
    started = time.time()
    try:
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        _close_display(trainer)
        run.update_info(status="interrupted")
        raise TunesmithError(f"interrupted; continue with: tunesmith train --resume {run.id}") from None
    except Exception:
        _close_display(trainer)
        run.update_info(status="failed")
        raise
    final_dir = save_final(trainer, tokenizer, run, config.method)
    summary = summarize(run, config, trainer, output, train_set, eval_set, time.time() - started, final_dir, precision)
    write_json_atomic(run.summary_path, summary)
    run.update_info(status="succeeded", finished_at=time.time())
    return RunResult(run, summary, trainer.model, tokenizer)


def clean_first(config: SFTConfig, workspace: Workspace, console: Console) -> SFTConfig:
    """Run `data clean` on the training (and validation) file; the config then points at the
    cleaned copies, stored by content hash so a resumed run finds the same ones."""
    from tunesmith.config import CleanConfig
    from tunesmith.data.clean import clean_file

    settings = config.data.clean if isinstance(config.data.clean, CleanConfig) else CleanConfig()
    data = config.data.model_copy()
    for field_name in ("train", "validation"):
        source = getattr(config.data, field_name)
        if not source:
            continue
        out = workspace.home / "cleaned" / f"{sha256_file(source)[:16]}.jsonl"
        summary = clean_file(source, out, settings)
        console.print(f"cleaned {source}: {summary.input_records} in = {summary.kept} kept + {summary.removed} removed "
                      f"(rejects: {out.with_suffix('.rejects.jsonl')})", markup=False, highlight=False)
        setattr(data, field_name, str(out))
    data.clean = False
    return config.model_copy(update={"data": data})


def prepare_data(config: SFTConfig, tokenizer, console: Console) -> tuple[EncodedSet, EncodedSet, dict[str, str]]:
    """Validate (every problem at once; nothing reaches the trainer otherwise), split and tokenize."""
    fmt = None if config.data.format == "auto" else config.data.format
    train_report = _validated(config.data.train, fmt, config.data.min_examples)
    hashes = {"train": sha256_file(config.data.train)}
    max_length = config.data.max_length
    if config.data.validation:
        eval_report = _validated(config.data.validation, fmt, 1)
        hashes["validation"] = sha256_file(config.data.validation)
        train_set = encode_records(train_report, tokenizer, max_length)
        eval_set = encode_records(eval_report, tokenizer, max_length)
    elif config.data.validation_fraction > 0:
        ratios = (1 - config.data.validation_fraction, config.data.validation_fraction)
        train_idx, eval_idx = split_indices([r.value for r in train_report.records], ratios, seed=config.training.seed)
        train_set = encode_records(train_report, tokenizer, max_length, train_idx)
        eval_set = encode_records(train_report, tokenizer, max_length, eval_idx)
    else:
        train_set, eval_set = encode_records(train_report, tokenizer, max_length), EncodedSet()
    if train_set.truncated or eval_set.truncated:
        console.print(f"[yellow]{train_set.truncated + eval_set.truncated} example(s) longer than "
                      f"max_length={max_length} were truncated[/]")
    dropped = train_set.dropped_lines + eval_set.dropped_lines
    if dropped:
        console.print(f"[yellow]{len(dropped)} example(s) had no assistant token left after truncation and "
                      f"were skipped (lines {', '.join(map(str, dropped[:10]))}{'...' if len(dropped) > 10 else ''})[/]")
    if not train_set.examples:
        raise DataError(f"{config.data.train}: no trainable example left")
    return train_set, eval_set, hashes


def _validated(path: str, fmt, min_examples: int) -> ValidationReport:
    report = validate_file(path, fmt, min_examples=min_examples)
    if not report.ok:
        raise DataError(report.summary(), report)
    if report.format.value not in ("chat", "prompt_completion", "instruction"):
        raise DataError(f"{path}: {report.format.value} data cannot be used for sft; "
                        "give chat, prompt/completion or instruction records")
    return report


def build_model(config: SFTConfig, model_ref):
    model = load_causal_lm(model_ref)
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = config.lora
        model = get_peft_model(model, LoraConfig(
            task_type="CAUSAL_LM", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=lora.target_modules))
    return model


def build_trainer(config: SFTConfig, model, tokenizer, train_set: EncodedSet, eval_set: EncodedSet,
                  run: Run, precision: str, console: Console):
    from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainingArguments

    t = config.training
    has_eval = bool(eval_set.examples)
    early_stopping = bool(t.early_stopping_patience and has_eval)
    args = TrainingArguments(
        output_dir=str(run.checkpoints_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps or t.eval_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=early_stopping,
        metric_for_best_model="eval_loss" if early_stopping else None,
        greater_is_better=False if early_stopping else None,
        logging_steps=t.logging_steps,
        seed=t.seed,
        data_seed=t.seed,
        bf16=precision == "bf16",
        use_cpu=not _cuda(),
        **_checkpointing_args(t.gradient_checkpointing),
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        prediction_loss_only=True,
        dataloader_num_workers=0,
    )
    callbacks = [CompletenessMarker(), MetricsLog(run.metrics_path), ProgressDisplay(console)]
    if early_stopping:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    trainer = Trainer(model=model, args=args, train_dataset=train_set.examples,
                      eval_dataset=eval_set.examples or None,
                      data_collator=PadCollator(tokenizer.pad_token_id, supports_loss_positions(model)),
                      processing_class=tokenizer, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # ProgressDisplay replaces its raw dict prints
    return trainer


def save_final(trainer, tokenizer, run: Run, method: str) -> Path:
    """Write the adapter (LoRA) or model (full) atomically: a temp directory renamed into place."""
    final = run.dir / ("adapter" if method == "lora" else "model")
    tmp = run.dir / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle: never ship or load it
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


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


def _open_run(config: SFTConfig, workspace: Workspace, run: Run | None, base_name: str, base_path: str,
              hashes: dict[str, str], name: str, console: Console) -> tuple[Run, Path | None]:
    """A new run directory, or the existing run and the checkpoint to resume it from."""
    if run is None:
        run = new_run(workspace, config.run_name or name)
        save_config(config, run.config_path)
        run.update_info(id=run.id, recipe="sft", method=config.method, base_model=base_name,
                        base_model_path=base_path, data=hashes, status="running", created_at=time.time())
        return run, None
    _check_same_data(run, hashes)
    resume_from = last_complete_checkpoint(run.checkpoints_dir,
                                           log=lambda m: console.print(m, style="yellow", markup=False))
    run.update_info(status="running", resumed_at=time.time(), resumed_from_step=_step_of(resume_from))
    console.print(f"resuming {run.id} from {resume_from.name if resume_from else 'the start (no complete checkpoint)'}",
                  markup=False, highlight=False)
    return run, resume_from


def _close_display(trainer) -> None:
    # An exception skips on_train_end: stop the live bar so the error prints below it.
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressDisplay):
            callback.close()


def _checkpointing_args(enabled: bool) -> dict[str, Any]:
    # Only passed when on: transformers 5.23 warns about the old argument name even when False.
    return {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}} if enabled else {}


def _step_of(checkpoint: Path | None) -> int:
    return int(checkpoint.name.split("-")[1]) if checkpoint else 0


def _check_same_data(run: Run, hashes: dict[str, str]) -> None:
    before = run.info().get("data", {})
    if before and before != hashes:
        raise TunesmithError(f"the data files of {run.id} changed since it started; resuming would train on "
                             "different data. Start a new run instead.")


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def _quiet_libraries() -> None:
    quiet_transformers()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
