"""The bridge from the HF Trainer to tunesmith: metrics.jsonl and the progress display.

These are the only Trainer subclasses in the code base (callbacks are the Trainer's extension
point; see ../shared/STYLE.md).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback


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
