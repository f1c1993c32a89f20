"""Starting a recipe: in this process, or on several processes, GPUs or machines through
torchrun — never a launcher of our own.

``train(config)`` looks the recipe up (training/recipes.py) and runs it here. With ``--nproc N``
(or ``--nnodes``) it checks the model and the data once, creates the run directory (so every
rank writes into the same one), saves the resolved config there, then runs ``torchrun`` with
this module as the program. Each rank runs the ordinary recipe on that directory;
transformers' Trainer (through Accelerate) sets up DDP from torchrun's environment — gloo on
CPU, NCCL on GPUs — or FSDP / DeepSpeed when the config's ``training.strategy`` asks for them.
Only rank 0 writes the run's files: its bookkeeping, metrics, checkpoints (the Trainer's
``should_save``), the final weights and the summary.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from tunesmith.config import RecipeConfig, load_config, save_config
from tunesmith.errors import TunesmithError
from tunesmith.runs import Run, find_run, new_run
from tunesmith.training.distributed import Distributed, is_main_process
from tunesmith.training.recipes import recipe_for
from tunesmith.training.sft import RunResult
from tunesmith.training.steps import clean_first
from tunesmith.workspace import Workspace


def train(config: RecipeConfig, workspace: Workspace, name: str = "run", console: Console | None = None,
          callbacks: list | None = None, distributed: Distributed | None = None) -> Any:
    """Train a new run of ``config``'s recipe, here or (``distributed``) on several processes."""
    if distributed and distributed.enabled:
        return train_distributed(config, workspace, name, console, distributed)
    if distributed and distributed.run_id:
        raise TunesmithError("--run-id names a run trained with --nproc/--nnodes; a single process names "
                             "its run from `run_name`")
    return recipe_for(config).run(config, workspace, console=console, name=name, callbacks=callbacks)


def resume(run: str, workspace: Workspace, console: Console | None = None, callbacks: list | None = None,
           distributed: Distributed | None = None) -> Any:
    """Continue a run from its last complete checkpoint, at the same global step."""
    found = find_run(run, workspace)
    if found.info().get("status") == "succeeded":
        raise TunesmithError(f"run {found.id} already finished; nothing to resume")
    config = load_config(found.config_path)
    if distributed and distributed.enabled:
        distributed.check()
        return _launched(found, False, workspace, distributed)
    return recipe_for(config).run(config, workspace, run=found, console=console, callbacks=callbacks)


def train_distributed(config: RecipeConfig, workspace: Workspace, name: str, console: Console | None,
                      distributed: Distributed) -> RunResult:
    """The run directory first (every rank writes into it), cleaned data first (once, not per
    rank), then torchrun."""
    distributed.check()
    if distributed.nnodes > 1 and not distributed.run_id:
        raise TunesmithError("a run on several machines needs --run-id ID, the same on every machine")
    if config.data.clean:
        config = clean_first(config, workspace, console or Console(stderr=True))
    recipe = recipe_for(config)
    recipe.check_model(config, workspace)  # one clear error here, not one failure per rank
    recipe.check_data(config)
    if distributed.run_id:
        run = Run(workspace.run_dir(distributed.run_id))
        if run.info_path.exists():
            raise TunesmithError(f"run {run.id} exists; resume it with --resume {run.id}")
        run.dir.mkdir(parents=True, exist_ok=True)
    else:
        run = new_run(workspace, config.run_name or name)
    save_config(config, run.config_path)
    return _launched(run, True, workspace, distributed)


def _launched(run: Run, fresh: bool, workspace: Workspace, distributed: Distributed) -> RunResult:
    launch(run.dir, fresh, distributed.nproc, distributed.nnodes, distributed.node_rank,
           distributed.rdzv_endpoint, home=workspace.home)
    return RunResult(run, read_summary(run.dir))


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
    args += ["-m", "tunesmith.training.launch", "--run-dir", str(run_dir)]
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

    run = Run(Path(args.run_dir))
    config = load_config(run.config_path)
    console = Console(stderr=True, quiet=not is_main_process())
    workspace = Workspace.default()  # the launcher passed its home in TUNESMITH_HOME
    try:
        recipe_for(config).run(config, workspace, run=run, console=console, fresh=args.fresh)
    except TunesmithError as e:  # the error, once (rank 0), as the CLI shows it; no traceback per rank
        console.print(f"error: {e}", style="red", markup=False, highlight=False)
        raise SystemExit(e.exit_code) from None


if __name__ == "__main__":
    _worker()
