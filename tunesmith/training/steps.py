"""What every recipe shares around the HF Trainer: the run directory, cleaning first, the
TrainingArguments from our settings, the final atomic save, and resume bookkeeping."""
from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from tunesmith.config import CleanConfig, RecipeConfig, TrainingSettings, save_config
from tunesmith.data.clean import clean_file
from tunesmith.errors import DiskFull, TunesmithError
from tunesmith.files import sha256_file, write_json_atomic
from tunesmith.models.card import write_model_card
from tunesmith.models.loading import quiet_transformers
from tunesmith.runs import Run, new_run
from tunesmith.tracking.callback import TrainingTracker
from tunesmith.training.callbacks import CompletenessMarker, DivergenceGuard, MetricsLog, ProgressDisplay
from tunesmith.training.checkpoints import free_incomplete, last_complete_checkpoint
from tunesmith.training.distributed import is_main_process, world_size
from tunesmith.workspace import Workspace


def prepare_process(config: RecipeConfig) -> None:
    quiet_transformers()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if config.training.threads:
        import torch
        torch.set_num_threads(config.training.threads)


def clean_first(config: RecipeConfig, workspace: Workspace, console: Console) -> RecipeConfig:
    """Run `data clean` on the training (and validation) file; the config then points at the
    cleaned copies, stored by content hash so a resumed run finds the same ones."""
    settings = config.data.clean if isinstance(config.data.clean, CleanConfig) else CleanConfig()
    data = config.data.model_copy()
    for field_name in ("train", "validation"):
        source = getattr(config.data, field_name)
        if not source:
            continue
        out = workspace.cleaned_dir / f"{sha256_file(source)[:16]}.jsonl"
        summary = clean_file(source, out, settings)
        console.print(f"cleaned {source}: {summary.input_records} in = {summary.kept} kept + {summary.removed} removed "
                      f"(rejects: {out.with_suffix('.rejects.jsonl')})", markup=False, highlight=False)
        setattr(data, field_name, str(out))
    data.clean = False
    return config.model_copy(update={"data": data})


def open_run(config: RecipeConfig, workspace: Workspace, run: Run | None, base_name: str, base_path: str,
             hashes: dict[str, str], name: str, console: Console, fresh: bool | None = None,
             **info: Any) -> tuple[Run, Path | None]:
    """A new run directory, or the existing run and the checkpoint to resume it from. An empty
    run directory (created ahead, e.g. by a server worker that records it first) starts fresh.

    ``fresh`` decides instead of the directory's state when several ranks of one distributed run
    open it at once (rank 0 writing ``run.json`` must not turn the others into resumers); only
    rank 0 writes.
    """
    main = is_main_process()
    if fresh is None:
        fresh = run is None or not run.info_path.exists()
    if fresh:
        run = run or new_run(workspace, config.run_name or name)
        if main:
            save_config(config, run.config_path)
            run.update_info(id=run.id, recipe=config.recipe, method=config.method, base_model=base_name,
                            base_model_path=base_path, data=hashes, status="running", created_at=time.time(), **info)
        return run, None
    _check_same_data(run, hashes)
    resume_from = last_complete_checkpoint(run.checkpoints_dir,
                                           log=lambda m: console.print(m, style="yellow", markup=False))
    if main:
        run.update_info(status="running", resumed_at=time.time(), resumed_from_step=_step_of(resume_from))
    console.print(f"resuming {run.id} from {resume_from.name if resume_from else 'the start (no complete checkpoint)'}",
                  markup=False, highlight=False)
    return run, resume_from


def training_arguments(t: TrainingSettings, run: Run, precision: str, has_eval: bool,
                       best_metric: str = "eval_loss", greater_is_better: bool = False,
                       per_device_batch_size: int | None = None, accumulation: int | None = None,
                       group_by_length: bool | None = None, args_class=None, report_to: list[str] | None = None,
                       **extra: Any):
    """TrainingArguments from our settings; a recipe that lays out batches itself (packed rows)
    passes its own per-device batch size, accumulation and grouping, and a TRL recipe its
    trainer's subclass of TrainingArguments (``args_class``) with that trainer's settings.
    ``report_to`` names the trackers transformers runs itself (W&B, TensorBoard; see
    tracking/callback.py for why MLflow is not among them)."""
    from transformers import TrainingArguments

    args_class = args_class or TrainingArguments
    early_stopping = bool(t.early_stopping_patience and has_eval)
    group_by_length = t.group_by_length if group_by_length is None else group_by_length
    return args_class(
        output_dir=str(run.checkpoints_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=per_device_batch_size or t.batch_size,
        per_device_eval_batch_size=per_device_batch_size or t.batch_size,
        gradient_accumulation_steps=accumulation or t.gradient_accumulation_steps,
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
        metric_for_best_model=best_metric if early_stopping else None,
        greater_is_better=greater_is_better if early_stopping else None,
        logging_steps=t.logging_steps,
        logging_nan_inf_filter=False,  # a NaN loss must be logged for DivergenceGuard to see it
        seed=t.seed,
        data_seed=t.seed,
        bf16=precision == "bf16",
        use_cpu=not cuda_available(),
        # Liger's Triton kernels (RMSNorm, SwiGLU, RoPE) on CUDA where installed; its fused loss stays
        # unused with ours, which passes no labels to the model. liger-kernel needs triton: no CPU.
        use_liger_kernel=cuda_available() and _installed("liger_kernel"),
        train_sampling_strategy=extra.pop("train_sampling_strategy", "group_by_length" if group_by_length else "random"),
        **_checkpointing_args(t.gradient_checkpointing),
        **_strategy_args(t.strategy),
        include_num_input_tokens_seen="non_padding",
        report_to=report_to or "none",
        run_name=run.id,  # the run's name in W&B / TensorBoard
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        **extra,
    )


def standard_callbacks(run: Run, t: TrainingSettings, has_eval: bool, console: Console) -> list:
    from transformers import EarlyStoppingCallback

    # In this order: the diverged log is still written to metrics.jsonl, and a checkpoint with
    # non-finite weights is refused before it is marked complete.
    callbacks = [MetricsLog(run.metrics_path), DivergenceGuard(), CompletenessMarker(), ProgressDisplay(console)]
    if t.early_stopping_patience and has_eval:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    return callbacks


def fit(trainer, run: Run, resume_from: Path | None):
    """``trainer.train`` with the run's status kept right when it is interrupted or fails. A
    failure frees the checkpoint it left half-written (a full disk must not stay full); the
    complete ones stay, to resume from."""
    try:
        return trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        _close_display(trainer)
        _abort_tracking(trainer, "KILLED")
        if is_main_process():
            run.update_info(status="interrupted")
        raise TunesmithError(f"interrupted; continue with: tunesmith train --resume {run.id}") from None
    except Exception as e:
        _close_display(trainer)
        _abort_tracking(trainer, "FAILED")
        full = out_of_space(e, run.dir)  # before the partial checkpoint's space is given back
        if is_main_process():
            _record_failure(run, e)
        if full:
            raise DiskFull(f"the disk holding {run.dir} is full ({type(e).__name__}: {e}). The last complete "
                           f"checkpoint is kept; free space, then continue with: tunesmith train --resume {run.id}") from e
        raise


LOW_SPACE_BYTES = 16 * 2**20


def out_of_space(error: BaseException, path: Path) -> bool:
    """Whether ``error`` is a write that failed for lack of space: ENOSPC/EDQUOT anywhere in its
    chain, or a RuntimeError/OSError while the disk is (nearly) full — torch.save reports ENOSPC
    only as ``[enforce fail at inline_container.cc] unexpected pos``.

    >>> import errno; out_of_space(OSError(errno.ENOSPC, "No space left on device"), Path("."))
    True
    """
    chain, seen = error, set()
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, OSError) and chain.errno in (errno.ENOSPC, errno.EDQUOT) \
                or "No space left on device" in str(chain):
            return True
        chain = chain.__cause__ or chain.__context__
    if not isinstance(error, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(path).free < LOW_SPACE_BYTES
    except OSError:
        return False


def _record_failure(run: Run, error: Exception) -> None:
    free_incomplete(run.checkpoints_dir)  # first: on a full disk, run.json needs the space
    try:
        run.update_info(status="failed", error=f"{type(error).__name__}: {error}"[:2000], finished_at=time.time())
    except OSError:
        pass  # still no room: the error that stopped training is the one to report


def finish_run(trainer, run: Run, summary: dict[str, Any], final_dir: Path) -> None:
    """Rank 0, after the final save: the summary, the run's status, and the tracked run closed
    with its figures and artefacts."""
    write_json_atomic(run.summary_path, summary)
    run.update_info(status="succeeded", finished_at=time.time())
    _write_card(final_dir, run)  # again, now with the summary's figures
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TrainingTracker):
            callback.complete(summary, final_dir)


def save_final(trainer, tokenizer, run: Run, method: str) -> Path:
    """Write the adapter (LoRA) or model (full) atomically: a temp directory renamed into place.
    Every rank calls it (FSDP gathers the weights collectively); rank 0 writes."""
    final = run.dir / ("model" if method == "full" else "adapter")
    tmp = run.dir / f".{final.name}.tmp"
    if is_main_process():
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    if not is_main_process():
        return final
    tokenizer.save_pretrained(str(tmp))
    (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle: never ship or load it
    _write_card(tmp, run)  # over peft's empty template, before the directory is in place
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _write_card(directory: Path, run: Run) -> None:
    """The model card (models/card.py) beside the weights. A run lives in ``<home>/runs/<id>``
    (Workspace.run_dir), so its home is two levels up; the card reads only the base model's
    manifest there. A card that cannot be written must not cost the trained weights: warn."""
    try:
        write_model_card(directory, run, Workspace(run.dir.parent.parent))
    except Exception as e:  # noqa: BLE001 - any failure here is the card's, not the run's
        print(f"warning: no model card written in {directory.name}/: {type(e).__name__}: {e}", file=sys.stderr)


def _installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def _close_display(trainer) -> None:
    # An exception skips on_train_end: stop the live bar so the error prints below it.
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressDisplay):
            callback.close()


def _abort_tracking(trainer, status: str) -> None:
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TrainingTracker):
            callback.abort(status)


def _checkpointing_args(enabled: bool) -> dict[str, Any]:
    # Only passed when on: transformers 5.23 warns about the old argument name even when False.
    return {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}} if enabled else {}


def _strategy_args(strategy: str) -> dict[str, Any]:
    """FSDP or DeepSpeed through the Trainer's own integrations; DDP needs nothing (torchrun's
    environment is enough). Ignored by a single process."""
    if strategy == "ddp" or world_size() == 1:
        return {}
    if strategy == "fsdp":
        return {"fsdp": True}
    if not _installed("deepspeed"):
        raise TunesmithError(f"training.strategy: {strategy} needs DeepSpeed: pip install deepspeed "
                             "(or use fsdp, which comes with PyTorch)")
    return {"deepspeed": {"zero_optimization": {"stage": 2 if strategy == "zero2" else 3},
                          "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
                          "gradient_clipping": "auto", "bf16": {"enabled": "auto"}}}


def _step_of(checkpoint: Path | None) -> int:
    return int(checkpoint.name.split("-")[1]) if checkpoint else 0


def _check_same_data(run: Run, hashes: dict[str, str]) -> None:
    before = run.info().get("data", {})
    if before and before != hashes:
        raise TunesmithError(f"the data files of {run.id} changed since it started; resuming would train on "
                             "different data. Start a new run instead.")
