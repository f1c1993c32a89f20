"""One table across runs: what each run is (recipe, model, method, data) and how it scored on
its latest evaluation, so runs of different models, methods or settings line up side by side."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tunesmith.reports import markdown_table, write_bundle, write_csv
from tunesmith.runs import Run
from tunesmith.workspace import Workspace

# (column, header, format) — columns without a value in any run are left out of the table.
COLUMNS = [
    ("run", "run", "{}"),
    ("recipe", "recipe", "{}"),
    ("base_model", "base model", "{}"),
    ("method", "method", "{}"),
    ("status", "status", "{}"),
    ("eval_data", "evaluated on", "{}"),
    ("eval_examples", "examples", "{:,}"),
    ("accuracy", "accuracy", "{:.2%}"),
    ("macro_f1", "macro F1", "{:.4f}"),
    ("ece", "ECE", "{:.4f}"),
    ("best_baseline", "best baseline", "{}"),
    ("best_baseline_accuracy", "baseline accuracy", "{:.2%}"),
    ("p50_ms", "p50 latency ms", "{:.1f}"),
    ("loss", "loss", "{:.4f}"),
    ("exact_match", "exact match", "{:.1%}"),
    ("rouge_l", "ROUGE-L", "{:.3f}"),
    ("bleu", "BLEU", "{:.2f}"),
    ("base_exact_match", "base exact match", "{:.1%}"),
    ("reward_accuracy", "reward accuracy", "{:.1%}"),
    ("win_rate", "win rate vs start", "{:.1%}"),
    ("general_perplexity_change", "general perplexity change", "{:+.1%}"),
    ("general_questions", "general questions (base → tuned)", "{}"),
    ("train_seconds", "train s", "{:,.0f}"),
]


def run_row(run: Run) -> dict[str, Any]:
    info, summary = run.info(), run.summary()
    row: dict[str, Any] = {"run": run.id, "recipe": info.get("recipe", "sft"), "base_model": info.get("base_model"),
                           "method": info.get("method"), "status": info.get("status"),
                           "train_seconds": summary.get("train_seconds")}
    report_path = run.eval_dir / "report.json"
    if not report_path.exists():
        return row
    report = json.loads(report_path.read_text())
    row |= {"eval_data": Path(report["data"]).name, "eval_examples": report["examples"]}
    if report.get("kind") == "classification":
        tuned = report["systems"][0]
        row |= {"accuracy": tuned["accuracy"], "macro_f1": tuned["macro_f1"], "ece": tuned.get("ece"),
                "p50_ms": (tuned.get("latency") or {}).get("p50_ms")}
        full = [s for s in report["systems"][1:] if s["examples"] == report["examples"]]
        if full:
            best = max(full, key=lambda s: s["accuracy"])
            row |= {"best_baseline": best["name"], "best_baseline_accuracy": best["accuracy"]}
    elif report.get("kind") == "preference":
        row |= {"reward_accuracy": report["rewards"]["accuracy"], "win_rate": report["win_rate"]}
    else:
        tuned, base = report["metrics"]["tuned"], report["metrics"]["base"]
        row |= {k: tuned.get(k) for k in ("loss", "exact_match", "rouge_l", "bleu")}
        row["base_exact_match"] = base.get("exact_match")
    forgetting = report.get("forgetting")
    if forgetting:
        base, tuned = forgetting["base"], forgetting["tuned"]
        row["general_perplexity_change"] = tuned["perplexity"] / base["perplexity"] - 1
        row["general_questions"] = f"{base['question_accuracy']:.0%} → {tuned['question_accuracy']:.0%}"
    return row


def comparison(runs: list[Run]) -> dict[str, Any]:
    """The table: column titles, formatted rows, and each run's raw figures (``runs``)."""
    rows = [run_row(r) for r in runs]
    columns = [(key, title, fmt) for key, title, fmt in COLUMNS if any(r.get(key) is not None for r in rows)]
    return {"columns": [title for _, title, _ in columns], "keys": [key for key, _, _ in columns],
            "rows": [[_format(r.get(key), fmt) for key, _, fmt in columns] for r in rows], "runs": rows}


def compare_runs(runs: list[Run], out: Path | None, workspace: Workspace) -> dict[str, Any]:
    """The table, also written as compare.md / .csv / .json to ``out``."""
    table = comparison(runs)
    rows, keys = table["runs"], table["keys"]
    out = out or workspace.compare_dir / time.strftime("%Y%m%d-%H%M%S")
    written = write_bundle(out, "compare", data=rows, markdown="\n".join(markdown_table(table["columns"], table["rows"])) + "\n")
    table["files"] = {"md": written["markdown"], "csv": str(write_csv(out / "compare.csv", keys, rows)),
                      "json": written["json"]}
    return table


def _format(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)
