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
  pass × the evaluations, and one measured checkpoint save × the saves (each every
  ``eval_steps`` / ``save_steps`` and once more at the last step), and the first step's warm-up
  (kernels compiled, caches filled) beyond its tokens' share, once per run;
- **peak RAM** is the child's RSS high-water (``getrusage``), which covers loading, the longest
  batch, an evaluation pass and a checkpoint save, **plus what grows with each new batch shape**.
  On a CPU the resident memory between steps rises with every batch shape not seen before
  (oneDNN keeps compiled kernels and their buffers per shape; the allocator keeps freed blocks
  of each size) and stops once the shapes repeat: measured on the quickstart (SmolLM2-135M, LoRA,
  packed rows of varying length), +630 MiB over the first epoch even with the heap trimmed after
  every step, flat in the last steps, and a 4-step probe's high-water 34 % under the run's. So
  the probe measures the RSS after each step and scales its rise over the measured steps from the
  new shapes they brought to the epoch's distinct shapes (the Trainer's own batches, collated
  again: the same count that gives the padded tokens), sublinearly (``GROWTH_EXPONENT``). On CUDA,
  **GPU memory** is torch's peak reserved;
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
    seconds_per_epoch: float            # training + evaluations + saves (+ the warm-up, over the epochs)
    total_seconds: float
    peak_rss_bytes: int                 # the probe's high-water + the growth for the shapes it did not run
    peak_gpu_bytes: int | None
    checkpoint_bytes: int
    checkpoints_kept: int
    final_weights_bytes: int
    disk_bytes: int
    free_ram_bytes: int = 0
    free_gpu_bytes: int | None = None
    probe_seconds: float = 0.0
    warmup_seconds: float = 0.0         # the first step's time beyond its tokens' share, once per run
    probe_peak_rss_bytes: int = 0       # the high-water the probe itself reached
    bytes_per_new_shape: int = 0        # resident growth per batch shape not seen before, measured
    batch_shapes_per_epoch: int = 0     # distinct batch shapes in one epoch
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
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")}
        env["TOKENIZERS_PARALLELISM"] = "false"
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
    # A step is its forward and backward passes, which grow with the tokens, and the optimizer's
    # update (and the scheduler's), which does not: a full fine-tune's AdamW over every weight is
    # a fixed cost that short batches do not shrink. Between steps, the next batches are fetched
    # and collated and the last step logged: a fixed cost too.
    optimizer = _mean(probe.get("optimizer_seconds", [])[1:])
    between = _mean(probe.get("gap_seconds", []))
    per_token = (sum(timed) - optimizer * len(timed)) / sum(timed_tokens) if timed and sum(timed_tokens) > 0 else 0.0
    if per_token > 0:
        # seconds per padded token, measured, × the padded tokens of an epoch, + the fixed costs per step
        train_per_epoch = per_token * probe["padded_tokens_per_epoch"] + (optimizer + between) * steps_per_epoch
    else:
        train_per_epoch = (seconds_per_step + between) * steps_per_epoch
    save_every = t.save_steps or t.eval_steps
    # Every eval_steps / save_steps, and once more at the last step when it is not on one (the
    # Trainer evaluates and saves at the end of training).
    evals_in_all = _every(total_steps, t.eval_steps) if probe["has_eval"] else 0
    all_saves = _every(total_steps, save_every)
    evals, saves = round(evals_in_all / epochs), round(all_saves / epochs)
    # The first step compiles kernels and fills caches: what it took beyond its tokens' share,
    # once per run (in the first epoch).
    warmup = 0.0
    if per_token > 0 and probe["step_tokens"][0] > 0:
        warmup = max(0.0, probe["step_seconds"][0] - per_token * probe["step_tokens"][0] - optimizer)
    in_all = (train_per_epoch * epochs + evals_in_all * probe["eval_seconds"] + all_saves * probe["save_seconds"]
              + warmup)
    per_epoch = in_all / epochs
    kept = min(all_saves, t.save_total_limit) if t.save_total_limit else all_saves
    growth, per_shape, unseen = shape_growth(probe)
    notes = []
    if growth:
        notes.append(f"peak RAM includes {_mib(growth)} for the {unseen} batch shapes the probe did not run "
                     f"(it measured {_mib(per_shape)} per new shape; the growth slows as shapes repeat)")
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
        seconds_per_epoch=round(per_epoch, 1), total_seconds=round(in_all, 1), warmup_seconds=round(warmup, 2),
        peak_rss_bytes=probe["peak_rss_bytes"] + growth, peak_gpu_bytes=probe["peak_gpu_bytes"],
        probe_peak_rss_bytes=probe["peak_rss_bytes"], bytes_per_new_shape=per_shape,
        batch_shapes_per_epoch=len(probe.get("epoch_shapes", [])),
        checkpoint_bytes=probe["checkpoint_bytes"], checkpoints_kept=kept,
        final_weights_bytes=probe["weights_bytes"],
        disk_bytes=probe["checkpoint_bytes"] * kept + probe["weights_bytes"], notes=notes)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _every(steps: int, interval: int) -> int:
    """How often something every ``interval`` steps happens in ``steps``, the last step included.

    >>> _every(59, 24), _every(48, 24), _every(10, 0)
    (3, 2, 0)
    """
    if interval <= 0:
        return 0
    return steps // interval + (1 if steps % interval else 0)


# How the resident growth scales with the batch shapes seen: as shapes**GROWTH_EXPONENT. Fitted
# on the quickstart's whole-epoch RSS curve (2 cores, bf16, SmolLM2-135M LoRA, packed rows):
# +306 MiB after 10 steps, then +455 / +742 / +919 MiB after 20 / 40 / 56 — between a square
# root (433 / 612 / 724) and a straight line (612 / 1224 / 1714). The heap grows in lumps (one
# step +200 MiB, the next +10), so a few probe steps give the rate only roughly; scaling it
# sublinearly keeps one lump from being multiplied by every shape of the epoch.
GROWTH_EXPONENT = 0.65


def shape_growth(probe: dict[str, Any]) -> tuple[int, int, int]:
    """(resident bytes the epoch's remaining batch shapes add, bytes per new shape in the probe,
    the epoch's shapes the probe did not run).

    The rise of the RSS after each step, from the end of the warm-up step to the end of the last
    measured one, came with the ``new`` shapes first seen in those steps; the epoch's ``new +
    unseen`` shapes scale it by ``((new + unseen) / new) ** GROWTH_EXPONENT``. Nothing when the
    measured steps brought no new shape or the RSS fell; nothing on a GPU, whose activations are
    not in the RSS."""
    rss, shapes = probe.get("step_rss", []), probe.get("step_shapes", [])
    if len(rss) < 2 or len(shapes) != len(rss) or probe.get("peak_gpu_bytes") is not None:
        return 0, 0, 0
    seen = {tuple(map(tuple, s)) for s in shapes[0]}
    new = 0
    for step in shapes[1:]:
        fresh = {tuple(map(tuple, s)) for s in step} - seen
        new, seen = new + len(fresh), seen | fresh
    unseen = len({tuple(map(tuple, s)) for s in probe.get("epoch_shapes", [])} - seen)
    rise = rss[-1] - rss[0]
    if new == 0 or rise <= 0:
        return 0, 0, unseen
    return int(rise * (((new + unseen) / new) ** GROWTH_EXPONENT - 1)), rise // new, unseen


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


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

    @property
    def mlflow_db_path(self) -> Path:
        return self.scratch / "mlflow.db"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.scratch / "mlartifacts"


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


def batch_shape(batch: Any) -> list[list[int]]:
    """A collated batch's tensor shapes, by key: the kernels and buffers a step needs follow them."""
    if not isinstance(batch, dict):
        return []
    return [[*map(int, v.shape)] for _, v in sorted(batch.items()) if hasattr(v, "shape")]


def batch_tokens(batch: Any) -> int:
    """Input ids a collated batch carries, padding included."""
    if not isinstance(batch, dict):
        return 0
    return sum(int(v.numel()) for k, v in batch.items() if k.endswith("input_ids") and hasattr(v, "numel"))


def _epoch_batches(dataloader, dataset) -> tuple[int, list[list[list[int]]]]:
    """The input ids one epoch's batches carry, padding included, and their distinct shapes: the
    Trainer's own batches (its batch sampler and collator), collated again here — iterating its
    dataloader itself would share the iterator training is using."""
    base = getattr(dataloader, "base_dataloader", dataloader)
    batches = getattr(base, "batch_sampler", None)
    if batches is None:
        return 0, []
    tokens, shapes = 0, set()
    for batch in batches:
        collated = base.collate_fn([dataset[i] for i in batch])
        tokens += batch_tokens(collated)
        shapes.add(tuple(map(tuple, batch_shape(collated))))
    return tokens, [[*map(list, s)] for s in sorted(shapes)]


def _rss_now() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


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
                          max_steps=state.max_steps, has_eval=args.eval_strategy != "no")
            record["padded_tokens_per_epoch"], record["epoch_shapes"] = _epoch_batches(train_dataloader, dataset)

        def on_step_begin(self, args, state, control, **kwargs):
            now = time.perf_counter()
            if "_step_ended" in record:  # the next batches fetched and collated, the last step logged
                record["gap_seconds"].append(now - record["_step_ended"])
            record["_tokens_before"] = record["micro_tokens"]
            record["_shapes"] = []
            record["_step_started"] = now

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            record["_optimizer_started"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = record["_step_ended"] = time.perf_counter()
            record["step_seconds"].append(now - record["_step_started"])
            record["optimizer_seconds"].append(now - record.get("_optimizer_started", now))
            record["step_tokens"].append(record["micro_tokens"] - record["_tokens_before"])
            record["step_shapes"].append(record["_shapes"])
            record["step_rss"].append(_rss_now())
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
        record.setdefault("_shapes", []).append(batch_shape(inputs))
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

    record: dict[str, Any] = {"micro_tokens": 0, "step_seconds": [], "step_tokens": [], "step_shapes": [],
                              "optimizer_seconds": [], "gap_seconds": [],
                              "step_rss": [], "epoch_shapes": [], "eval_seconds": 0.0,
                              "save_seconds": 0.0, "checkpoint_bytes": 0, "weights_bytes": 0}
    # MLflow is in the run's memory (~200 MiB resident once imported and writing): the probe
    # tracks as the run will, into the scratch workspace's own store (database and artefacts),
    # never the user's (estimate() leaves MLFLOW_TRACKING_URI out of the child's environment).
    mlflow = "mlflow" in config.tracking.report_to and isinstance(workspace, _ScratchWorkspace)
    tracking = config.tracking.model_copy(update={"report_to": ["mlflow"] if mlflow else [], "tracking_uri": None})
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
