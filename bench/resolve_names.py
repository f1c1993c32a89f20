"""What a chat request pays to turn its model name into weights, as the home's history grows.

    python bench/resolve_names.py [--jobs 300] [--checkpoints 3]

Builds a throw-away home with a tiny model and ``--jobs`` finished fine-tuning jobs (each with a
run directory and ``--checkpoints`` checkpoints), then times ``ModelServer.resolve`` two ways:
the baseline is a full scan of the home (what every request did before the name cache: every
job's row and checkpoints read again), against the cached lookup a request makes now. Prints
milliseconds per resolve and the ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tiny model of the test fixtures


def build_home(jobs: int, checkpoints: int):
    from tests.conftest import build_tiny_model
    from tunesmith.jobs.db import Database, JobRow
    from tunesmith.workspace import Workspace

    home = Workspace(Path(tempfile.mkdtemp(prefix="tunesmith-names-")))
    model = build_tiny_model(home.model_dir("tiny-chat"))
    (model / "tunesmith-model.json").write_text(json.dumps({"description": "tiny", "architecture": "llama",
                                                            "task": "causal-lm"}))
    db = Database.for_workspace(home)
    with db.session() as session:
        for i in range(jobs):
            run = home.run_dir(f"run{i}")
            (run / "adapter").mkdir(parents=True)
            (run / "run.json").write_text(json.dumps({"status": "succeeded", "recipe": "sft", "base_model": "tiny-chat"}))
            for step in range(1, checkpoints + 1):
                path = run / "checkpoints" / f"checkpoint-{step * 10}"
                path.mkdir(parents=True)
                (path / "trainer_state.json").write_text("{}")
            session.add(JobRow(id=f"ftjob-{i}", created_at=i, status="succeeded", model="tiny-chat", training_file="f",
                               seed=0, method={"type": "supervised", "supervised": {"hyperparameters": {}}},
                               run_id=f"run{i}", fine_tuned_model=f"ft:tiny-chat:tunesmith::{i:08d}", finished_at=i))
    return home, db


def per_call(fn, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--checkpoints", type=int, default=3)
    args = parser.parse_args()
    from tunesmith.jobs.served_models import JobModels
    from tunesmith.serving.model_server import ModelServer

    home, db = build_home(args.jobs, args.checkpoints)
    server = ModelServer(home, JobModels(home, db))
    name = f"ft:tiny-chat:tunesmith::{args.jobs // 2:08d}"
    scan = per_call(lambda: server.targets(fresh=True), 10)
    server.resolve(name)
    cached = per_call(lambda: server.resolve(name), 500)
    print(f"{args.jobs} jobs x {args.checkpoints} checkpoints: full scan (baseline) {scan:.1f} ms per request, "
          f"cached resolve {cached:.3f} ms: {scan / cached:.0f}x faster")


if __name__ == "__main__":
    main()
