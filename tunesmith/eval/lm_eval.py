"""lm-evaluation-harness on a run or a model: ``tunesmith eval RUN --lm-eval TASKS``.

The harness (``lm_eval.simple_evaluate``) gets its own ``hf`` model (``HFLM``) built on the model
tunesmith loads (``models/engine.py:load``, a LoRA adapter merged into its base) and on that
model's tokenizer from its local directory: nothing is fetched from the hub for the model. Why the
``hf`` model and not ``local-completions`` against an in-process server: the same scores (the
server's ``/v1/completions`` logprobs are the same forward pass, ``tests/server/test_lm_eval.py``),
without an HTTP round trip per request, and generation tasks run too.

Tasks: custom ones from local YAML files (``--lm-eval-include DIR``; with ``dataset_path: json``
and ``data_files`` they run offline, ``examples/lm-eval/``). Most stock tasks (hellaswag, arc_easy,
mmlu ...) download their dataset from the Hugging Face hub on first use: offline they fail, and
the error says so. lm-eval is imported here only (it is heavy; ``pip install 'tunesmith[lm-eval]'``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.models import engine
from tunesmith.workspace import Workspace


def parse_tasks(tasks: str | list[str]) -> list[str]:
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        raise ConfigError("--lm-eval needs at least one task name (comma-separated)")
    return names


def run_lm_eval(target: str, workspace: Workspace, tasks: str | list[str], include: Path | None = None,
                limit: int | None = None, batch_size: int = 8, log: Callable[[str], None] = print) -> dict:
    """Run lm-eval ``tasks`` on ``target`` (a run or a model); the metrics of each task."""
    names = parse_tasks(tasks)
    if include is not None and not Path(include).is_dir():
        raise ConfigError(f"--lm-eval-include {include}: not a directory of task YAML files")
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise TunesmithError("--lm-eval needs lm-evaluation-harness: pip install 'tunesmith[lm-eval]'") from None
    manager = TaskManager(include_path=str(include) if include is not None else None)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"unknown lm-eval task(s): {', '.join(unknown)} (custom tasks: --lm-eval-include DIR "
                          "with their YAML files; `lm_eval ls tasks` lists the stock ones)")
    loaded = engine.load(target, workspace, merge=True)
    model = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
    log(f"lm-eval: {', '.join(names)} on {loaded.name}" + (f" (first {limit} documents each)" if limit else ""))
    started = time.perf_counter()
    try:
        results = lm_eval.simple_evaluate(model=model, tasks=names, task_manager=manager, limit=limit,
                                          log_samples=False)
    except (ConnectionError, OSError) as e:
        raise TunesmithError(f"lm-eval could not load a task's dataset ({e}); stock tasks download theirs from the "
                             "Hugging Face hub: run them online once (they are cached), or use a local task "
                             "(dataset_path: json, data_files) with --lm-eval-include") from None
    return {"model": loaded.name, "tasks": _metrics(results), "limit": limit,
            "seconds": round(time.perf_counter() - started, 1),
            "lm_eval_version": getattr(lm_eval, "__version__", None)}


def _metrics(results: dict) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` from lm-eval's results (``acc,none`` → ``acc``, stderr kept)."""
    tasks = {}
    for task, values in results.get("results", {}).items():
        metrics = {}
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                name, _, filter_ = key.partition(",")
                metrics[name if filter_ in ("", "none") else f"{name} ({filter_})"] = float(value)
        tasks[task] = metrics
    return tasks
