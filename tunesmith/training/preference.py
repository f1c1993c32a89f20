"""The dpo recipe: preference tuning on chosen/rejected pairs, through TRL's trainers.

Read top to bottom: read and split the pairs → the starting point (a model, or an SFT run with
its adapter merged) → the model to tune (an adapter on it, or all its weights) → TRL's trainer
for the chosen objective → train (or resume) → save.

One config key picks the objective (``preference.algorithm``): ``dpo`` and ``ipo`` are TRL's
``DPOTrainer`` with its sigmoid / IPO loss, ``kto`` its ``KTOTrainer`` (which splits each pair
into a desirable and an undesirable answer), ``orpo`` its ``ORPOTrainer`` (no reference model).
With an adapter, the reference model is the same weights with the adapter switched off, so no
second copy is held; with ``method: full`` the reference is a frozen copy of the starting point.

Plain-string pairs become one-turn conversations, as prompt/completion records do for sft, so
the chat template is applied the same way for both kinds of records.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from tunesmith.config import PreferenceConfig
from tunesmith.data.formats import as_preference
from tunesmith.data.split import split_indices
from tunesmith.data.validate import validate_file
from tunesmith.errors import ConfigError, DataError
from tunesmith.files import sha256_file
from tunesmith.models import adapters, engine
from tunesmith.models.chat import ensure_chat_template
from tunesmith.models.classifier import LABELS_FILE
from tunesmith.models.hardware import resolve_precision
from tunesmith.models.loading import count_parameters, load_causal_lm, load_tokenizer
from tunesmith.models.store import ModelRef, resolve_model
from tunesmith.runs import Run, find_run, is_run_ref
from tunesmith.tracking.callback import hf_report_to, tracking_callbacks
from tunesmith.training.distributed import is_main_process
from tunesmith.training.sft import RunResult
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

Pair = dict[str, list[dict[str, str]]]  # prompt, chosen, rejected: lists of chat messages


@dataclass(frozen=True)
class StartingPoint:
    """What preference tuning starts from: a model, or a finished run (``run`` set)."""

    name: str  # a model name or a run id
    path: str
    run: Run | None = None
    ref: ModelRef | None = None  # for a model


def run_preference(config: PreferenceConfig, workspace: Workspace, run: Run | None = None,
                   console: Console | None = None, name: str = "dpo", callbacks: list | None = None,
                   fresh: bool | None = None) -> RunResult:
    """Train a new preference run, or continue ``run`` from its last complete checkpoint."""
    console = console or Console(stderr=True)
    adapters.require_supported(config.method)
    prepare_process(config)
    start = starting_point(config, workspace)
    if config.data.clean:
        config = clean_first(config, workspace, console)
    train_pairs, eval_pairs, hashes = prepare_data(config)

    extra = {"start_run": start.run.id} if start.run else {}
    run, resume_from = open_run(config, workspace, run, start.name, start.path, hashes, name, console, fresh,
                                algorithm=config.preference.algorithm, **extra)
    console.print(f"run {run.id}  ({run.dir})", markup=False, highlight=False)
    callbacks = tracking_callbacks(config, workspace, run, console) + (callbacks or [])

    precision = resolve_precision(config.training.precision)
    from transformers import set_seed
    set_seed(config.training.seed)  # before the adapter's weights are drawn
    model, tokenizer = load_start(start, config, workspace)
    if ensure_chat_template(tokenizer, config.chat_template):
        console.print(f"{start.name} has no chat template; using ChatML", style="yellow", markup=False)
    reference = copy.deepcopy(model).eval() if config.method == "full" and needs_reference(config) else None
    if config.method != "full":
        model = adapters.wrap(model, config.method, config.lora)
    trainable, total = count_parameters(model)
    console.print(f"{config.preference.algorithm} ({config.method}) from {start.name}: {trainable:,} trainable of "
                  f"{total:,} parameters; precision {precision}; {len(train_pairs)} training / "
                  f"{len(eval_pairs)} validation pairs", markup=False, highlight=False)

    trainer = build_trainer(config, model, reference, tokenizer, train_pairs, eval_pairs, run, precision, console,
                            callbacks)
    started = time.time()
    output = fit(trainer, run, resume_from)
    final_dir = save_final(trainer, tokenizer, run, config.method)
    if not is_main_process():
        return RunResult(run, {}, trainer.model, tokenizer)
    summary = summarize(run, config, trainer, output, train_pairs, eval_pairs, time.time() - started, precision,
                        str(final_dir))
    summary |= {"trainable_parameters": trainable, "total_parameters": total}
    finish_run(trainer, run, summary, final_dir)
    return RunResult(run, summary, trainer.model, tokenizer)


# ── data ────────────────────────────────────────────────────────────────────────────────────

def prepare_data(config: PreferenceConfig) -> tuple[list[Pair], list[Pair], dict[str, str]]:
    """Validated pairs (every problem at once), split into training and validation."""
    train = read_pairs(config.data.train, config.data.min_examples)
    hashes = {"train": sha256_file(config.data.train)}
    if config.data.validation:
        hashes["validation"] = sha256_file(config.data.validation)
        return train, read_pairs(config.data.validation, 1), hashes
    if config.data.validation_fraction <= 0:
        return train, [], hashes
    ratios = (1 - config.data.validation_fraction, config.data.validation_fraction)
    train_idx, eval_idx = split_indices(train, ratios, seed=config.training.seed)
    return [train[i] for i in train_idx], [train[i] for i in eval_idx], hashes


def check_data(config: PreferenceConfig) -> None:
    """Validate the files without a model: what a launcher of several processes checks first."""
    read_pairs(config.data.train, config.data.min_examples)
    if config.data.validation:
        read_pairs(config.data.validation, 1)


def read_pairs(path: str, min_examples: int) -> list[Pair]:
    report = validate_file(path, "preference", min_examples=min_examples)
    if not report.ok:
        raise DataError(report.summary(), report)
    return [as_conversations(as_preference(r.value)) for r in report.records]


def as_conversations(record: dict[str, Any]) -> Pair:
    """A validated preference record with every part as chat messages.

    >>> as_conversations({"prompt": "2+2?", "chosen": "4", "rejected": "5"})["chosen"]
    [{'role': 'assistant', 'content': '4'}]
    """
    def messages(value, role: str) -> list[dict[str, str]]:
        if isinstance(value, str):
            return [{"role": role, "content": value}]
        return [{"role": m["role"], "content": m["content"]} for m in value]

    return {"prompt": messages(record["prompt"], "user"), "chosen": messages(record["chosen"], "assistant"),
            "rejected": messages(record["rejected"], "assistant")}


# ── model ───────────────────────────────────────────────────────────────────────────────────

def starting_point(config: PreferenceConfig, workspace: Workspace) -> StartingPoint:
    """The model named by ``config.model``: a finished run first, then a model."""
    if is_run_ref(config.model, workspace):
        run = find_run(config.model, workspace)
        if (run.final_dir / LABELS_FILE).exists():  # a classification head over labels, not a language model
            raise ConfigError(f"model: run {run.id} is a classifier; preference tuning starts "
                              "from a causal language model or an sft/dpo run")
        if config.method == "qlora":
            raise ConfigError("method: qlora loads a base model in 4 bits; it cannot start from a run's merged "
                              "weights. Use method: lora.")
        if not run.final_dir.exists():
            raise ConfigError(f"model: run {run.id} has no trained weights yet ({run.final_dir} is missing)")
        return StartingPoint(run.id, str(run.final_dir), run)
    ref = resolve_model(config.model, workspace)
    return StartingPoint(ref.name, ref.path, ref=ref)


def load_start(start: StartingPoint, config: PreferenceConfig, workspace: Workspace):
    """The starting weights in fp32 (an SFT run's adapter merged in) and the tokenizer."""
    import torch

    if start.run is not None:
        loaded = engine.load_run(start.run, workspace, merge=True, dtype=torch.float32)
        return loaded.model.train(), loaded.tokenizer
    return (load_causal_lm(start.ref, quantization=adapters.quantization_config(config.method)),
            load_tokenizer(start.ref))


def needs_reference(config: PreferenceConfig) -> bool:
    return config.preference.algorithm != "orpo"


# ── trainer ─────────────────────────────────────────────────────────────────────────────────

def build_trainer(config: PreferenceConfig, model, reference, tokenizer, train_pairs: list[Pair],
                  eval_pairs: list[Pair], run: Run, precision: str, console: Console, callbacks: list | None = None):
    from datasets import Dataset
    from transformers import PrinterCallback

    t, algorithm = config.training, config.preference.algorithm
    has_eval = bool(eval_pairs)
    trainer_class, args_class, objective = _objective(algorithm, config.preference.beta)
    args = training_arguments(t, run, precision, has_eval, args_class=args_class, max_length=config.data.max_length,
                              report_to=hf_report_to(config.tracking, run, console), **objective)
    kwargs: dict[str, Any] = {"ref_model": reference} if needs_reference(config) else {}
    if algorithm == "kto":  # unpaired and shuffled here: KTO reads its data in order (see below)
        train_pairs, eval_pairs = unpaired(train_pairs, t.seed), unpaired(eval_pairs, t.seed)
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(train_pairs),
                            eval_dataset=Dataset.from_list(eval_pairs) if has_eval else None,
                            processing_class=tokenizer,
                            callbacks=standard_callbacks(run, t, has_eval, console) + (callbacks or []), **kwargs)
    trainer.remove_callback(PrinterCallback)
    return trainer


def _objective(algorithm: str, beta: float):
    """(trainer class, its config class, the objective's settings) for one algorithm."""
    if algorithm in ("dpo", "ipo"):
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer, DPOConfig, {"beta": beta, "loss_type": ["sigmoid" if algorithm == "dpo" else "ipo"]}
    if algorithm == "kto":
        from trl import KTOConfig, KTOTrainer

        # KTO estimates its KL term against the neighbouring examples of a fixed-order batch, so
        # TRL requires sequential sampling; the data is shuffled once beforehand instead.
        return KTOTrainer, KTOConfig, {"beta": beta, "train_sampling_strategy": "sequential"}
    import os
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO lives in trl.experimental since TRL 1.0
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return ORPOTrainer, ORPOConfig, {"beta": beta}


def unpaired(pairs: list[Pair], seed: int) -> list[dict[str, Any]]:
    """Each pair as a desirable and an undesirable answer (KTO's data), in a seeded random order.

    >>> [r["label"] for r in unpaired([{"prompt": [], "chosen": [], "rejected": []}], 0)]
    [True, False]
    """
    import random

    rows = [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
            for p in pairs for side in ("chosen", "rejected")]
    random.Random(seed).shuffle(rows)
    return rows


def summarize(run: Run, config: PreferenceConfig, trainer, output, train_pairs: list[Pair], eval_pairs: list[Pair],
              seconds: float, precision: str, final_dir: str) -> dict[str, Any]:
    state = trainer.state
    evals = [h for h in state.log_history if "eval_loss" in h]
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    last_eval = evals[-1] if evals else {}
    return {
        "run_id": run.id,
        "base_model": run.info().get("base_model"),
        "method": config.method,
        "algorithm": config.preference.algorithm,
        "beta": config.preference.beta,
        "precision": precision,
        "global_step": state.global_step,
        "epochs": round(state.epoch or 0, 3),
        "train_examples": len(train_pairs),
        "validation_examples": len(eval_pairs),
        "first_train_loss": losses[0] if losses else None,
        "last_train_loss": losses[-1] if losses else None,
        "mean_train_loss": output.training_loss,
        "best_eval_loss": min(h["eval_loss"] for h in evals) if evals else None,
        "last_eval_loss": last_eval.get("eval_loss"),
        "last_eval_reward_accuracy": last_eval.get("eval_rewards/accuracies"),
        "last_eval_reward_margin": last_eval.get("eval_rewards/margins"),
        "input_tokens_seen": state.num_input_tokens_seen,
        "train_seconds": round(seconds, 1),
        "final_dir": final_dir,
    }

