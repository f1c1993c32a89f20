"""The bridge from the HF Trainer to tunesmith: metrics.jsonl, the progress display, the stop
on divergence and the checkpoint completeness marker.

These are the only Trainer subclasses in the code base (callbacks are the Trainer's extension
point; see ../shared/STYLE.md).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

from tunesmith.errors import TrainingDiverged
from tunesmith.training.checkpoints import MARKER, checkpoints_by_step, mark_complete


class MetricsLog(TrainerCallback):
    """Appends every log and evaluation to ``metrics.jsonl`` (flushed per line, survives a kill)."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), "time": time.time(),
                  "tokens_seen": state.num_input_tokens_seen, **logs}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


class ProgressDisplay(TrainerCallback):
    """A progress bar with loss, tokens/s and ETA on a terminal; one plain line per log otherwise."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task = None
        self.start_time = 0.0
        self.start_tokens = 0
        self.start_step = 0
        self.loss: float | None = None
        self.eval_loss: float | None = None
        self.eval_f1: float | None = None  # classify runs

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.start_time, self.start_tokens = time.time(), state.num_input_tokens_seen
        self.start_step = state.global_step  # > 0 when resuming
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]training"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console)
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, stats="")

    def tokens_per_second(self, state) -> float:
        elapsed = time.time() - self.start_time
        return (state.num_input_tokens_seen - self.start_tokens) / elapsed if elapsed > 0 else 0.0

    def _stats(self, state) -> str:
        parts = []
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.eval_loss is not None:
            parts.append(f"val {self.eval_loss:.4f}")
        if self.eval_f1 is not None:
            parts.append(f"val macro-F1 {self.eval_f1:.3f}")
        if state.num_input_tokens_seen:  # not counted by trainers whose batches name their inputs otherwise (ORPO, KTO)
            parts.append(f"{self.tokens_per_second(state):.0f} tok/s")
        return "  ".join(parts)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, stats=self._stats(state))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.loss = logs.get("loss", self.loss)
        self.eval_loss = logs.get("eval_loss", self.eval_loss)
        self.eval_f1 = logs.get("eval_macro_f1", self.eval_f1)
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, stats=self._stats(state))
        elif "loss" in logs or "eval_loss" in logs:
            elapsed = time.time() - self.start_time
            done = max(state.global_step - self.start_step, 1)
            eta = elapsed / done * (state.max_steps - state.global_step)
            self.console.print(f"step {state.global_step}/{state.max_steps}  {self._stats(state)}  "
                               f"elapsed {elapsed:.0f}s  ETA {eta:.0f}s", highlight=False)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """Stop the live display (also when training ends by an exception, which skips on_train_end)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class DivergenceGuard(TrainerCallback):
    """Stops a run whose loss or gradient norm is no longer a finite number (fp16 overflow, a
    learning rate far too high): TrainingDiverged is raised out of training, so the recipe never
    saves or publishes a final model and the run ends ``failed``. A checkpoint whose trainable
    weights are not finite is refused before it is marked complete (it comes before
    CompletenessMarker), so the last complete checkpoint is the last good one even when the
    divergence happened between two logged steps; so is the final model, at the end of training.

    Needs the Trainer's ``logging_nan_inf_filter`` off (runner.training_arguments does it): with it
    on, the loss of a NaN step is replaced by the running mean and never logged.
    """

    WATCHED = ("loss", "grad_norm", "eval_loss")

    def on_log(self, args, state, control, logs=None, **kwargs):
        bad = {key: logs[key] for key in self.WATCHED
               if isinstance((logs or {}).get(key), (int, float)) and not math.isfinite(logs[key])}
        if bad:
            values = ", ".join(f"{key}={value}" for key, value in bad.items())
            raise TrainingDiverged(self._message(args, state, values))

    def on_save(self, args, state, control, model=None, **kwargs):
        if model is not None and not finite_weights(model):
            raise TrainingDiverged(self._message(args, state, "trainable weights are not finite"))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        # The steps after the last logged one: the final model is saved (published) right after.
        self.on_save(args, state, control, model=model)

    @staticmethod
    def _message(args, state, what: str) -> str:
        marked = [step for step, path in checkpoints_by_step(Path(args.output_dir)) if (path / MARKER).exists()]
        kept = f"the last good checkpoint (step {marked[-1]}) is kept" if marked else "there is no good checkpoint yet"
        return (f"training diverged at step {state.global_step}: {what}. Training was stopped, {kept} and no "
                "model was published. Lower the learning rate, or use bf16 rather than fp16.")


def finite_weights(model) -> bool:
    """Whether every trainable weight is finite (an adapter's only, for a LoRA run: cheap)."""
    import torch

    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad)


class CompletenessMarker(TrainerCallback):
    """Marks each checkpoint complete right after the Trainer has finished writing it
    (training/checkpoints.py says why)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                mark_complete(checkpoint, state.global_step)
