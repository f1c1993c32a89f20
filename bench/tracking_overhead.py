"""What experiment tracking costs a training run: tunesmith's MLflow tracking against no tracking
and against transformers' own ``MLflowCallback``, same model, data and steps, one machine.

    python bench/tracking_overhead.py [--model smollm2-135m-instruct] [--steps 24] [--repeats 2]

Systems (each run in its own process, alternately, ``--repeats`` rounds):
- ``none``: ``tracking.report_to: none`` — the baseline.
- ``tunesmith``: the default, a local SQLite MLflow store: parameters, every log at its step
  (``logging_steps: 1`` here, the worst case), dataset inputs, final artefacts (the adapter).
- ``hf-mlflow``: tracking off in tunesmith, transformers' ``MLflowCallback`` added instead
  (same store kind; it logs parameters and every log, no artefacts).
Printed per system: wall seconds of the ``tunesmith.train`` call (model load to final save),
seconds per step, the ratio to ``none``, and the seconds spent inside the tracking calls
themselves (MLflow import, store creation, every log, artefact upload) with their share of the
run: whole-run ratios move by several per cent between identical runs on a shared 2-core machine,
the time inside the calls does not. The quickstart data (examples/support-routing) is used; nothing here is downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tunesmith.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ["none", "tunesmith", "hf-mlflow"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return print(json.dumps(run_one(args.worker, args.model, args.steps, Path(args.home))))

    seconds: dict[str, list[float]] = {s: [] for s in SYSTEMS}
    tracking: dict[str, list[float]] = {s: [] for s in SYSTEMS}
    for round_ in range(args.repeats):
        for system in SYSTEMS:
            home = Path(tempfile.mkdtemp(prefix=f"tunesmith-track-{system}-"))
            models = Workspace.default().models_dir
            (home / "models").parent.mkdir(parents=True, exist_ok=True)
            (home / "models").symlink_to(models)  # the pulled models, without copying them
            out = subprocess.run([sys.executable, __file__, "--worker", system, "--model", args.model,
                                  "--steps", str(args.steps), "--home", str(home)],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            seconds[system].append(result["seconds"])
            tracking[system].append(result["tracking_seconds"])
            print(f"round {round_ + 1} {system}: {result['seconds']:.1f} s, {result['tracking_seconds']:.2f} s "
                  "inside tracking calls", file=sys.stderr)
    base = statistics.median(seconds["none"])
    print(f"\n{args.model}, {args.steps} steps, logging every step, median of {args.repeats} round(s)")
    print(f"{'system':<12}{'seconds':>10}{'s/step':>10}{'vs none':>10}{'in tracking s':>15}{'share':>8}")
    for system in SYSTEMS:
        value, inside = statistics.median(seconds[system]), statistics.median(tracking[system])
        print(f"{system:<12}{value:>10.1f}{value / args.steps:>10.3f}{value / base:>10.3f}{inside:>15.2f}"
              f"{inside / value:>8.1%}")


def run_one(system: str, model: str, steps: int, home: Path) -> dict:
    import tunesmith
    from tunesmith.config import load_config

    overrides = [f"model={model}", f"data.train={ROOT / 'examples/support-routing/data.jsonl'}",
                 f"training.max_steps={steps}", "training.logging_steps=1", f"training.eval_steps={steps}",
                 "data.max_length=256", "run_name=bench"]
    if system != "tunesmith":
        overrides.append("tracking.report_to=none")
    callbacks = []
    spent = [0.0]
    if system == "tunesmith":
        from tunesmith.tracking.tracker import Tracker

        _time_calls(Tracker, ["_guard"], spent)  # every MLflow call goes through it
    if system == "hf-mlflow":
        from transformers.integrations import MLflowCallback

        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'hf-mlflow.db'}"
        _time_calls(MLflowCallback, ["setup", "on_log", "on_save", "on_train_end"], spent)
        callbacks.append(MLflowCallback())
    config = load_config(ROOT / "examples/quickstart.yaml", overrides)
    started = time.perf_counter()
    tunesmith.train(config, workspace=tunesmith.Workspace(home), callbacks=callbacks)
    return {"seconds": time.perf_counter() - started, "tracking_seconds": spent[0]}


def _time_calls(cls, names: list[str], spent: list[float]) -> None:
    """Add the time spent inside these methods to ``spent[0]`` (the tracking work itself, which
    is less noisy to compare than whole runs that differ by a few seconds in minutes)."""
    for name in names:
        original = getattr(cls, name)

        def timed(self, *args, _original=original, **kwargs):
            started = time.perf_counter()
            try:
                return _original(self, *args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started
        setattr(cls, name, timed)


if __name__ == "__main__":
    main()
