"""Training on several processes, GPUs or machines through torchrun — never a launcher of our own.

``tunesmith train CONFIG --nproc N`` creates the run directory (so every rank writes into the
same one), then runs ``torchrun`` with this module as the program. Each rank runs the ordinary
recipe; transformers' Trainer (through Accelerate) sets up DDP from torchrun's environment —
gloo on CPU, NCCL on GPUs — or FSDP / DeepSpeed when the config's ``training.distributed``
asks for them. Only rank 0 writes the run's files: its bookkeeping, metrics, checkpoints
(the Trainer's ``should_save``), the final weights and the summary.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from tunesmith.errors import TunesmithError


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def torchrun_command(run_dir: Path, fresh: bool, nproc: int, nnodes: int = 1, node_rank: int | None = None,
                     rdzv_endpoint: str | None = None) -> list[str]:
    """The torchrun command line: standalone on one machine, c10d rendezvous across machines."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes > 1:
        if not rdzv_endpoint:
            raise TunesmithError("training on several machines needs --rdzv-endpoint HOST:PORT "
                                 "(the same on every machine)")
        command += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
                    f"--rdzv-id={run_dir.name}"]
        if node_rank is not None:
            command.append(f"--node-rank={node_rank}")
    else:
        command.append("--standalone")
    command += ["-m", "tunesmith.training.distributed", "--run-dir", str(run_dir)]
    return command + (["--fresh"] if fresh else [])


def launch(run_dir: Path, fresh: bool, nproc: int, nnodes: int = 1, node_rank: int | None = None,
           rdzv_endpoint: str | None = None, home: Path | None = None) -> None:
    """Run torchrun and wait. A failed rank fails the launch, with the way to resume."""
    env = dict(os.environ)
    if home is not None:
        env["TUNESMITH_HOME"] = str(home)
    # One process per core on CPU: torchrun would otherwise leave each rank all the cores' threads
    # fighting each other (it sets 1 thread, which wastes cores when nproc < cores).
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    command = torchrun_command(run_dir, fresh, nproc, nnodes, node_rank, rdzv_endpoint)
    code = subprocess.run(command, env=env).returncode
    if code:
        raise TunesmithError(f"distributed training failed (torchrun exit {code}); continue with: "
                             f"tunesmith train --resume {run_dir.name} --nproc {nproc}")


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
    api.recipe_runner(config)(config, workspace, run=run, console=console, fresh=args.fresh)


if __name__ == "__main__":
    _worker()
