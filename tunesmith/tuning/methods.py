"""``tunesmith methods compare CONFIG``: every tuning method on the same data, side by side.

Each method trains the recipe as configured (same data, seed, steps or epochs, so the same
tokens), with only ``method`` changed, in a process of its own so that its peak memory is its
own (``os.wait4`` returns the child's resource usage). Then, where the config has test data,
each run is evaluated on it without baselines. One table: trainable parameters, time,
tokens/s, peak RSS, validation loss and the test metric; written as Markdown, CSV and JSON.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any, Callable

from tunesmith.config import load_config
from tunesmith.errors import TunesmithError
from tunesmith.eval.evaluate import EvalOptions, evaluate
from tunesmith.reports import markdown_table, write_bundle, write_csv
from tunesmith.workspace import Workspace

COLUMNS = [("method", "method", "{}"), ("trainable_parameters", "trainable params", "{:,}"),
           ("trainable_share", "trainable %", "{:.3%}"), ("train_seconds", "train s", "{:,.0f}"),
           ("tokens_per_second", "tokens/s", "{:,.1f}"), ("peak_rss_gb", "peak RSS GB", "{:.2f}"),
           ("best_eval_loss", "best val loss", "{:.4f}"), ("test_metric", "test metric", "{}"),
           ("run", "run", "{}")]


def available_methods(config) -> list[str]:
    """The recipe's methods that can run on this machine (qlora only with CUDA)."""
    import torch

    methods = list(typing.get_args(type(config).model_fields["method"].annotation))
    return [m for m in methods if m != "qlora" or torch.cuda.is_available()]


def compare_methods(config_path: str | Path, methods: list[str] | None, overrides: list[str], workspace: Workspace,
                    evaluate: bool = True, eval_examples: int | None = None, out: Path | None = None,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    config = load_config(config_path, overrides)
    allowed = available_methods(config)
    methods = methods or allowed
    unknown = [m for m in methods if m not in allowed]
    if unknown:
        why = " (qlora needs a CUDA GPU)" if "qlora" in unknown else ""
        raise TunesmithError(f"method(s) {', '.join(unknown)} cannot run for recipe {config.recipe} here{why}; "
                             f"choose from {', '.join(allowed)}")
    out = out or workspace.compare_dir / f"methods-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, method in enumerate(methods, 1):
        log(f"[{i}/{len(methods)}] training with method: {method} (log: {out / f'{method}.log'})")
        row = _train_one(config_path, method, overrides, config.run_name or Path(config_path).stem, out, workspace)
        if evaluate and row.get("run") and config.data.test:
            log(f"[{i}/{len(methods)}] evaluating {row['run']} on {config.data.test}")
            row["test_metric"] = _test_metric(row["run"], eval_examples, workspace)
        rows.append(row)
    return _write(rows, out)


def _train_one(config_path, method: str, overrides: list[str], stem: str, out: Path, workspace: Workspace) -> dict:
    command = [sys.executable, "-m", "tunesmith", "train", str(config_path), *[a for o in overrides for a in ("--set", o)],
               "--set", f"method={method}", "--set", f"run_name={stem}-{method}"]
    env = dict(os.environ, TUNESMITH_HOME=str(workspace.home), COLUMNS="200")
    with open(out / f"{method}.log", "w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    text = (out / f"{method}.log").read_text(errors="replace")
    found = re.search(r"^run: (\S+)$", text, re.MULTILINE)
    row: dict[str, Any] = {"method": method, "peak_rss_gb": usage.ru_maxrss / 1024**2}  # ru_maxrss: KiB on Linux
    if process.returncode or not found:
        last = text.strip().splitlines()[-1:] or ["no output"]
        return row | {"run": None, "test_metric": f"failed: {last[0][:120]}"}
    summary = json.loads((workspace.run_dir(found.group(1)) / "summary.json").read_text())
    seconds = summary.get("train_seconds") or 0
    tokens = summary.get("input_tokens_seen") or 0
    return row | {"run": found.group(1), "trainable_parameters": summary.get("trainable_parameters"),
                  "trainable_share": summary["trainable_parameters"] / summary["total_parameters"]
                  if summary.get("total_parameters") else None,
                  "train_seconds": seconds, "tokens_per_second": tokens / seconds if seconds and tokens else None,
                  "best_eval_loss": summary.get("best_eval_loss")}


def _test_metric(run: str, max_examples: int | None, workspace: Workspace) -> str:
    report = evaluate(run, workspace, options=EvalOptions(max_examples=max_examples, baselines=False, samples=0,
                                                          few_shot=0), log=lambda m: None)
    if report.get("kind") == "classification":
        return f"accuracy {report['systems'][0]['accuracy']:.2%}"
    if report.get("kind") == "preference":
        return f"reward accuracy {report['rewards']['accuracy']:.1%}, win rate {report['win_rate']:.1%}"
    tuned = report["metrics"]["tuned"]
    if "exact_match" in tuned:
        return f"exact match {tuned['exact_match']:.1%}"
    return f"ROUGE-L {tuned['rouge_l']:.3f}"


def _write(rows: list[dict], out: Path) -> dict[str, Any]:
    columns = [(k, title, fmt) for k, title, fmt in COLUMNS if any(r.get(k) is not None for r in rows)]
    table = [[fmt.format(r[k]) if r.get(k) is not None else "–" for k, _, fmt in columns] for r in rows]
    titles = [t for _, t, _ in columns]
    written = write_bundle(out, "methods", data=rows, markdown="\n".join(markdown_table(titles, table)) + "\n")
    csv_path = write_csv(out / "methods.csv", [k for k, _, _ in columns], rows)
    return {"columns": titles, "rows": table, "runs": rows,
            "files": {"md": written["markdown"], "csv": str(csv_path), "json": written["json"]}}
