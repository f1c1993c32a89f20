"""What a search leaves behind in ``<home>/studies/<name>/``:

    best.yaml        the best trial's config, ready for `tunesmith train best.yaml`
    trials.csv/.md   every trial: state, value, parameters, run id, duration
    history.png      optimisation history (Optuna's matplotlib plot)
    importance.png   parameter importance (fANOVA; needs two finished trials)
    report.html      all of it on one self-contained page
    summary.json     the same figures for programs
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from tunesmith.config import save_config
from tunesmith.eval import html
from tunesmith.files import write_json_atomic
from tunesmith.tuning.space import with_values

COLUMNS = ["trial", "state", "value", "run", "seconds", "worker"]


def trial_rows(study) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per trial; a column per parameter."""
    params = sorted({key for t in study.trials for key in t.params})
    rows = []
    for t in study.trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                     "run": t.user_attrs.get("run_id"), "seconds": round(seconds, 1) if seconds is not None else None,
                     "worker": t.user_attrs.get("worker"), "error": t.user_attrs.get("error"),
                     "pruned_at_step": max(t.intermediate_values) if t.state.name == "PRUNED" and t.intermediate_values else None,
                     **{key: t.params.get(key) for key in params}})
    return COLUMNS + params, rows


def trial_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The table's columns: the fixed ones, then every parameter (dotted config keys)."""
    fixed = set(COLUMNS) | {"error", "pruned_at_step"}
    return COLUMNS + sorted({key for row in rows for key in row if key not in fixed})


def write(study, config, out: Path) -> dict[str, Any]:
    """Write every output file; returns the summary (also summary.json)."""
    out.mkdir(parents=True, exist_ok=True)
    columns, rows = trial_rows(study)
    counts = {state: sum(r["state"] == state for r in rows) for state in ("complete", "pruned", "fail", "running", "waiting")}
    summary: dict[str, Any] = {"study": study.study_name, "direction": study.direction.name.lower(),
                               "metric": study.user_attrs.get("search", {}).get("metric"), "trials": counts,
                               "rows": rows, "files": {}}
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    if finished:
        best = study.best_trial
        summary |= {"best_trial": best.number, "best_value": best.value, "best_params": best.params,
                    "best_run": best.user_attrs.get("run_id")}
        best_config = with_values(config, best.params)
        best_config = best_config.model_copy(update={"run_name": f"{study.study_name}-best"})
        save_config(best_config, out / "best.yaml")
        summary["files"]["best_config"] = str(out / "best.yaml")
    summary["files"] |= _tables(columns, rows, out)
    plots = _plots(study, out)
    summary["files"] |= plots
    summary["files"]["html"] = str(_html(summary, columns, rows, plots, out))
    write_json_atomic(out / "summary.json", summary)
    summary["files"]["json"] = str(out / "summary.json")
    return summary


def _tables(columns: list[str], rows: list[dict[str, Any]], out: Path) -> dict[str, str]:
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns + ["pruned_at_step", "error"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    (out / "trials.md").write_text("\n".join(lines) + "\n")
    return {"csv": str(out / "trials.csv"), "markdown": str(out / "trials.md")}


def _plots(study, out: Path) -> dict[str, str]:
    """Optuna's own matplotlib plots; importance needs two finished trials and one varying parameter."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    made = {}
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    for name, draw, needed in (("history", optuna_plots.plot_optimization_history, 1),
                               ("importance", optuna_plots.plot_param_importances, 2)):
        if len(finished) < needed:
            continue
        try:
            axes = draw(study)
        except (ValueError, RuntimeError):  # e.g. every finished trial drew the same values
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(8, 4.5)
        figure.tight_layout()
        figure.savefig(out / f"{name}.png", dpi=110)
        plt.close(figure)
        made[name] = str(out / f"{name}.png")
    return made


def _html(summary: dict[str, Any], columns: list[str], rows: list[dict[str, Any]], plots: dict[str, str], out: Path) -> Path:
    sections = []
    if "best_value" in summary:
        best = [[key, _cell(value)] for key, value in summary["best_params"].items()]
        sections.append(("Best trial", html.paragraph(f"trial {summary['best_trial']} (run {summary['best_run']}): "
                                                      f"{summary['metric']} {summary['best_value']:.4f}; its config: best.yaml")
                         + html.table(["parameter", "value"], best)))
    for name, title in (("history", "Optimisation history"), ("importance", "Parameter importance")):
        if name in plots:
            sections.append((title, html.image(Path(plots[name]).read_bytes(), title)))
    best_index = next((i for i, r in enumerate(rows) if r["trial"] == summary.get("best_trial")), None)
    sections.append(("Trials", html.table(columns, [[_cell(r.get(c)) for c in columns] for r in rows], best_index)))
    counts = ", ".join(f"{n} {state}" for state, n in summary["trials"].items() if n)
    page = html.page(f"Study {summary['study']}", sections, subtitle=f"{summary['direction']} {summary['metric']}; {counts}.")
    (out / "report.html").write_text(page, encoding="utf-8")
    return out / "report.html"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

