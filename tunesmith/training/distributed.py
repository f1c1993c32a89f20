"""Training on several processes, GPUs or machines through torchrun — never a launcher of our own.

``tunesmith train CONFIG --nproc N`` creates the run directory (so every rank writes into the
same one), then runs ``torchrun`` with this module as the program. Each rank runs the ordinary
recipe; transformers' Trainer (through Accelerate) sets up DDP from torchrun's environment —
gloo on CPU, NCCL on GPUs — or FSDP / DeepSpeed when the config's ``training.strategy``
asks for them. Only rank 0 writes the run's files: its bookkeeping, metrics, checkpoints
(the Trainer's ``should_save``), the final weights and the summary.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
from pathlib import Path

from tunesmith.errors import TunesmithError


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def torchrun_args(run_dir: Path, fresh: bool, nproc: int, nnodes: int = 1, node_rank: int | None = None,
                  rdzv_endpoint: str | None = None) -> list[str]:
    """torchrun's arguments: standalone on one machine, c10d rendezvous across machines."""
    args = [f"--nproc-per-node={nproc}"]
    if nnodes > 1:
        args += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
                 f"--rdzv-id={run_dir.name}"]
        if node_rank is not None:
            args.append(f"--node-rank={node_rank}")
    else:
        args.append("--standalone")
    args += ["-m", "tunesmith.training.distributed", "--run-dir", str(run_dir)]
    return args + (["--fresh"] if fresh else [])


def launch(run_dir: Path, fresh: bool, nproc: int, nnodes: int = 1, node_rank: int | None = None,
           rdzv_endpoint: str | None = None, home: Path | None = None) -> None:
    """Run torchrun's launcher (in this process; the ranks are its child processes) and wait.
    A failed rank fails the launch: the ranks have printed the error; we add what to do next
    instead of torchrun's own traceback."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # The ranks inherit this process's environment, set for the launch only. torchrun gives each
    # rank 1 thread when OMP_NUM_THREADS is unset, which leaves cores idle when nproc < cores:
    # each rank gets its share of the cores instead.
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))}
    if home is not None:
        env["TUNESMITH_HOME"] = str(home)
    try:
        with _environment(env):
            run(parse_args(torchrun_args(run_dir, fresh, nproc, nnodes, node_rank, rdzv_endpoint)))
    except SignalException:  # Ctrl-C or a kill: torchrun has already stopped the ranks
        raise TunesmithError(f"interrupted; continue with: tunesmith train --resume {run_dir.name} "
                             f"--nproc {nproc}") from None
    except ChildFailedError:
        if not (run_dir / "run.json").exists():  # failed before training began: nothing to resume
            if fresh:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise TunesmithError("distributed training failed before it started (see the error above)") from None
        raise TunesmithError("distributed training failed (see the error above); continue with: "
                             f"tunesmith train --resume {run_dir.name} --nproc {nproc}") from None


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _worker(argv: list[str] | None = None) -> None:
    """One rank: the recipe on the run directory the launcher prepared."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args(argv)

    from rich.console import Console

    from tunesmith import api
    from tunesmith.config import load_config
    from tunesmith.runs import Run
    from tunesmith.workspace import Workspace

    run = Run(Path(args.run_dir))
    config = load_config(run.config_path)
    console = Console(stderr=True, quiet=not is_main_process())
    workspace = Workspace(Path(os.environ["TUNESMITH_HOME"])) if "TUNESMITH_HOME" in os.environ else Workspace.default()
    try:
        api.recipe_runner(config)(config, workspace, run=run, console=console, fresh=args.fresh)
    except TunesmithError as e:  # the error, once (rank 0), as the CLI shows it; no traceback per rank
        console.print(f"error: {e}", style="red", markup=False, highlight=False)
        raise SystemExit(e.exit_code) from None


if __name__ == "__main__":
    _worker()
