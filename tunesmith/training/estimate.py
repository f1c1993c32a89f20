"""Will it fit, and how long? A pre-flight estimate of a training run, measured, not guessed.

``estimate(config, workspace)`` runs the config's own recipe (sft, classify, dpo; any method) in a
child process, in a scratch directory, for a few real optimizer steps on real batches, then stops:

- the data is tokenised, templated, packed and truncated by the recipe itself, so **tokens per
  epoch** and **optimizer steps** (per epoch from the Trainer's own dataloader, batch size and
  gradient accumulation; in total its ``max_steps``) are what training will see;
- the training order is changed so that the **longest example is in the first batch** (padded
  batches are as long as their longest row, so that batch holds the most activations). The first
  step is warm-up: its time is left out, its memory is not;
- **time per epoch**: the measured steps' seconds per (padded) input token × the padded input
  tokens of one epoch (one pass of the Trainer's dataloader, collated as training does), so an
  epoch of longer sequences than the measured steps costs more; plus one measured evaluation
  pass × the evaluations per epoch, and one measured checkpoint save × the saves per epoch;
- **peak RAM** is the child's RSS high-water (``getrusage``), which covers loading, the longest
  batch, an evaluation pass and a checkpoint save; on CUDA, **GPU memory** is torch's peak reserved;
- **disk**: the size of the checkpoint the probe wrote × the checkpoints kept
  (``save_total_limit``), plus the final weights.

A child process keeps the parent's own memory (a server, the CLI) out of the measure and gives it
back at once. ``check_fits`` refuses (``ResourceError``) when the peak exceeds what is free now.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import RecipeConfig, load_config, save_config
from tunesmith.errors import TunesmithError
from tunesmith.workspace import Workspace

DEFAULT_PROBE_STEPS = 4  # one warm-up + three measured


class ResourceError(TunesmithError):
    """The run would not fit in the memory free on this machine."""


@dataclass
class Estimate:
    recipe: str
    method: str
    model: str
    device: str
    train_examples: int
    tokens_per_epoch: int               # input tokens of the tokenised training examples (no padding)
    padded_tokens_per_epoch: int        # what the batches carry, padding included
    longest_example_tokens: int
    steps_per_epoch: int
    total_steps: int
    epochs: float
    measured_steps: int                 # timed (the warm-up step excluded)
    seconds_per_step: float
    train_seconds_per_epoch: float
    eval_seconds: float                 # one evaluation pass
    evals_per_epoch: int
    save_seconds: float                 # one checkpoint save
    saves_per_epoch: int
    seconds_per_epoch: float            # training + evaluations + saves
    total_seconds: float
    peak_rss_bytes: int
    peak_gpu_bytes: int | None
    checkpoint_bytes: int
    checkpoints_kept: int
    final_weights_bytes: int
    disk_bytes: int
    free_ram_bytes: int = 0
    free_gpu_bytes: int | None = None
    probe_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        out = []
        if self.free_ram_bytes and self.peak_rss_bytes > self.free_ram_bytes:
            out.append(f"peak RAM {_gib(self.peak_rss_bytes)} exceeds the {_gib(self.free_ram_bytes)} free")
        if self.peak_gpu_bytes and self.free_gpu_bytes is not None and self.peak_gpu_bytes > self.free_gpu_bytes:
            out.append(f"peak GPU memory {_gib(self.peak_gpu_bytes)} exceeds the {_gib(self.free_gpu_bytes)} free")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"fits": self.fits, "problems": self.problems()}


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def free_memory() -> tuple[int, int | None]:
    """Bytes of RAM available now (psutil's ``available``), and free on the current GPU (CUDA)."""
    import psutil

    gpu = None
    try:
        import torch
        if torch.cuda.is_available():
            gpu = int(torch.cuda.mem_get_info()[0])
    except Exception:  # no usable CUDA: RAM is the only limit
        gpu = None
    return int(psutil.virtual_memory().available), gpu


def check_fits(est: Estimate, force: bool = False) -> None:
    """Refuse, with the numbers, a run whose estimated peak exceeds the free memory."""
    problems = est.problems()
    if problems and not force:
        raise ResourceError("the run would not fit: " + "; ".join(problems)
                            + " (estimated by a probe of the recipe; add --force to start anyway)")


def estimate(config: RecipeConfig, workspace: Workspace, probe_steps: int = DEFAULT_PROBE_STEPS,
             timeout: float | None = None) -> Estimate:
    """Probe ``config``'s recipe in a child process and scale what it measured to the full run."""
    if probe_steps < 2:
        raise TunesmithError("the estimate needs at least 2 probe steps (the first is warm-up)")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="tunesmith-estimate-") as scratch:
        scratch_path = Path(scratch)
        config_path = scratch_path / "config.yaml"
        save_config(config, config_path)
        out = scratch_path / "probe.json"
        cmd = [sys.executable, "-m", "tunesmith.training.estimate", "--config", str(config_path),
               "--home", str(workspace.home), "--scratch", str(scratch_path), "--steps", str(probe_steps),
               "--out", str(out)]
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TunesmithError(f"the estimate's probe ran past {timeout:.0f} s") from None
        if not out.exists():
            raise TunesmithError(_probe_failure(proc))
        probe = json.loads(out.read_text())
    if "error" in probe:
        raise TunesmithError(probe["error"])
    est = scale(probe, config)
    est.free_ram_bytes, est.free_gpu_bytes = free_memory()
    est.probe_seconds = round(time.time() - started, 1)
    return est


def _probe_failure(proc: subprocess.CompletedProcess) -> str:
    tail = "\n".join((proc.stderr or "").strip().splitlines()[-8:])
    return f"the estimate's probe failed (exit {proc.returncode}):\n{tail}"


def scale(probe: dict[str, Any], config: RecipeConfig) -> Estimate:
    """From the probe's measurements to the run: steps, time, disk."""
    t = config.training
    steps_per_epoch = max(1, math.ceil(probe["batches_per_epoch"] / max(1, probe["accumulation"])))
    total_steps = int(probe["max_steps"])
    epochs = total_steps / steps_per_epoch
    timed = probe["step_seconds"][1:]
    timed_tokens = probe["step_tokens"][1:]
    seconds_per_step = sum(timed) / len(timed) if timed else 0.0
    if timed and sum(timed_tokens) > 0:
        # seconds per padded token, measured, × the padded tokens of an epoch
        train_per_epoch = sum(timed) / sum(timed_tokens) * probe["padded_tokens_per_epoch"]
    else:
        train_per_epoch = seconds_per_step * steps_per_epoch
    epoch_steps = min(steps_per_epoch, total_steps)
    evals = epoch_steps // t.eval_steps if probe["has_eval"] else 0
    save_every = t.save_steps or t.eval_steps
    saves = epoch_steps // save_every
    per_epoch = train_per_epoch + evals * probe["eval_seconds"] + saves * probe["save_seconds"]
    all_saves = total_steps // save_every
    kept = min(all_saves, t.save_total_limit) if t.save_total_limit else all_saves
    notes = []
    if probe["accumulation"] > 1:
        notes.append(f"{probe['accumulation']} batches per optimizer step")
    return Estimate(
        recipe=config.recipe, method=getattr(config, "method", "full"), model=str(config.model),
        device=probe["device"], train_examples=probe["train_examples"],
        tokens_per_epoch=probe["tokens_per_epoch"], padded_tokens_per_epoch=probe["padded_tokens_per_epoch"],
        longest_example_tokens=probe["longest_example_tokens"],
        steps_per_epoch=steps_per_epoch, total_steps=total_steps, epochs=round(epochs, 3),
        measured_steps=len(timed), seconds_per_step=round(seconds_per_step, 3),
        train_seconds_per_epoch=round(train_per_epoch, 1), eval_seconds=round(probe["eval_seconds"], 2),
        evals_per_epoch=evals, save_seconds=round(probe["save_seconds"], 2), saves_per_epoch=saves,
        seconds_per_epoch=round(per_epoch, 1), total_seconds=round(per_epoch * epochs, 1),
        peak_rss_bytes=probe["peak_rss_bytes"], peak_gpu_bytes=probe["peak_gpu_bytes"],
        checkpoint_bytes=probe["checkpoint_bytes"], checkpoints_kept=kept,
        final_weights_bytes=probe["weights_bytes"],
        disk_bytes=probe["checkpoint_bytes"] * kept + probe["weights_bytes"], notes=notes)


# --- the probe (the child process) ---------------------------------------------------------


@dataclass(frozen=True)
class _ScratchWorkspace(Workspace):
    """The home's models, but runs and cleaned copies in the probe's scratch directory."""
    scratch: Path = Path(".")

    @property
    def runs_dir(self) -> Path:
        return self.scratch / "runs"

    @property
    def cleaned_dir(self) -> Path:
        return self.scratch / "cleaned"


class _ProbeDone(Exception):
    """Raised by the probe's callback once it has measured what it needs."""


def _input_tokens(value) -> int:
    return len(value) if isinstance(value, (list, tuple)) else 0


def example_tokens(example: Any) -> int:
    """Input ids in one tokenised training example, whatever the recipe (``input_ids``, or DPO's
    ``prompt_input_ids`` + ``chosen_input_ids`` + ``rejected_input_ids``)."""
    if not isinstance(example, dict):
        return 0
    return sum(_input_tokens(v) for k, v in example.items() if k.endswith("input_ids"))


def batch_tokens(batch: Any) -> int:
    """Input ids a collated batch carries, padding included."""
    if not isinstance(batch, dict):
        return 0
    return sum(int(v.numel()) for k, v in batch.items() if k.endswith("input_ids") and hasattr(v, "numel"))


def _padded_tokens(dataloader, dataset) -> int:
    """The input ids one epoch's batches carry, padding included: the Trainer's own batches (its
    batch sampler and collator), collated again here — iterating its dataloader itself would
    share the iterator training is using."""
    base = getattr(dataloader, "base_dataloader", dataloader)
    batches = getattr(base, "batch_sampler", None)
    if batches is None:
        return 0
    return sum(batch_tokens(base.collate_fn([dataset[i] for i in batch])) for batch in batches)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


_WEIGHTS = (".safetensors", ".bin", ".pt")


def _probe_callback(steps: int, record: dict):
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            dataset = train_dataloader.dataset if train_dataloader is not None else []
            lengths = [example_tokens(dataset[i]) for i in range(len(dataset))]
            record.update(train_examples=len(lengths), tokens_per_epoch=sum(lengths),
                          longest_example_tokens=max(lengths, default=0),
                          batches_per_epoch=len(train_dataloader), accumulation=args.gradient_accumulation_steps,
                          max_steps=state.max_steps, has_eval=args.eval_strategy != "no",
                          padded_tokens_per_epoch=_padded_tokens(train_dataloader, dataset))

        def on_step_begin(self, args, state, control, **kwargs):
            record["_tokens_before"] = record["micro_tokens"]
            record["_step_started"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            record["step_seconds"].append(time.perf_counter() - record["_step_started"])
            record["step_tokens"].append(record["micro_tokens"] - record["_tokens_before"])
            if len(record["step_seconds"]) >= min(steps, state.max_steps):
                record["_eval_started"] = time.perf_counter()
                control.should_evaluate = record["has_eval"]
                control.should_save = True
            return control

        def on_evaluate(self, args, state, control, **kwargs):
            record["eval_seconds"] = time.perf_counter() - record["_eval_started"]
            record["_save_started"] = time.perf_counter()

        def on_save(self, args, state, control, **kwargs):
            started = record.get("_save_started", record["_eval_started"])
            record["save_seconds"] = time.perf_counter() - started
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            record["checkpoint_bytes"] = _dir_bytes(checkpoint)
            record["weights_bytes"] = sum(p.stat().st_size for p in checkpoint.iterdir()
                                          if p.is_file() and p.suffix in _WEIGHTS and "optimizer" not in p.name
                                          and "scheduler" not in p.name and "rng" not in p.name)
            raise _ProbeDone

    return Probe()


def _patch_trainer(record: dict) -> None:
    """Count the input tokens of every micro-batch trained on, and put the longest example in
    the first batch (the rest of the order is the Trainer's own)."""
    from transformers import Trainer

    training_step = Trainer.training_step
    get_sampler = Trainer._get_train_sampler

    def counted_step(self, model, inputs, *args, **kwargs):
        record["micro_tokens"] += batch_tokens(inputs)
        return training_step(self, model, inputs, *args, **kwargs)

    class LongestFirst:
        def __init__(self, inner, longest: int):
            self.inner, self.longest = inner, longest

        def __len__(self):
            return len(self.inner)

        def __iter__(self):
            yield self.longest
            yield from (i for i in self.inner if i != self.longest)

    def longest_first(self, train_dataset=None):
        inner = get_sampler(self, train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if inner is None or dataset is None:
            return inner
        lengths = [example_tokens(dataset[i]) for i in range(len(dataset))]
        if not lengths or not any(lengths):
            return inner
        return LongestFirst(inner, max(range(len(lengths)), key=lengths.__getitem__))

    Trainer.training_step = counted_step
    Trainer._get_train_sampler = longest_first


def probe(config: RecipeConfig, workspace: Workspace, steps: int) -> dict[str, Any]:
    """Run the recipe for ``steps`` optimizer steps, an evaluation and a save; what it measured."""
    from rich.console import Console

    from tunesmith.training.recipes import recipe_for

    record: dict[str, Any] = {"micro_tokens": 0, "step_seconds": [], "step_tokens": [], "eval_seconds": 0.0,
                              "save_seconds": 0.0, "checkpoint_bytes": 0, "weights_bytes": 0}
    tracking = config.tracking.model_copy(update={"report_to": []})
    config = config.model_copy(update={"tracking": tracking, "run_name": "estimate"})
    _patch_trainer(record)
    console = Console(stderr=True, quiet=True)
    try:
        recipe_for(config).run(config, workspace, console=console, name="estimate",
                               callbacks=[_probe_callback(steps, record)])
    except _ProbeDone:
        pass
    except TunesmithError as e:
        if not isinstance(e.__cause__, _ProbeDone) and "_ProbeDone" not in repr(e):
            raise
    import torch

    cuda = torch.cuda.is_available()
    record["device"] = torch.cuda.get_device_name() if cuda else "cpu"
    record["peak_gpu_bytes"] = int(torch.cuda.max_memory_reserved()) if cuda else None
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    record["peak_rss_bytes"] = int(maxrss if sys.platform == "darwin" else maxrss * 1024)
    if "batches_per_epoch" not in record:
        raise TunesmithError("the estimate's probe ended before training began")
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--scratch", required=True)
    parser.add_argument("--steps", type=int, default=DEFAULT_PROBE_STEPS)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    workspace = _ScratchWorkspace(Path(args.home), Path(args.scratch))
    try:
        result = probe(load_config(args.config), workspace, args.steps)
    except TunesmithError as e:
        result = {"error": str(e)}
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    _main()
