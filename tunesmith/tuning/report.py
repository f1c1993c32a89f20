"""What a search leaves behind in ``<home>/studies/<name>/``:

    best.yaml        the best trial's config, ready for `tunesmith train best.yaml`
    trials.csv/.md   every trial: state, value, parameters, run id, duration
    history.png      optimisation history (Optuna's matplotlib plot)
    curves.png       every trial's validation curve, pruned trials included
    importance.png   parameter importance (fANOVA over the trials that reached a common step)
    report.html      all of it on one self-contained page
    summary.json     the same figures for programs
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.config import save_config
from tunesmith.files import write_atomic
from tunesmith.reports import figure_png, html, markdown_table, pyplot, write_bundle, write_csv
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
    summary["files"]["html"] = _html(summary, columns, rows, plots, out)
    summary["files"]["json"] = write_bundle(out, "summary", data=summary)["json"]
    return summary


def _tables(columns: list[str], rows: list[dict[str, Any]], out: Path) -> dict[str, str]:
    csv_path = write_csv(out / "trials.csv", columns + ["pruned_at_step", "error"], rows)
    markdown = "\n".join(markdown_table(columns, [[_cell(r.get(c)) for c in columns] for r in rows])) + "\n"
    return {"csv": str(csv_path), "markdown": write_bundle(out, "trials", markdown=markdown)["markdown"]}


def _plots(study, out: Path) -> dict[str, str]:
    """Optuna's own matplotlib plots: the history of finished trials, every trial's validation
    curve (pruned ones included), and parameter importance (fANOVA)."""
    pyplot()  # the headless backend, before optuna imports pyplot
    from optuna.visualization import matplotlib as optuna_plots

    made = {}
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    if finished:
        made["history"] = _save(optuna_plots.plot_optimization_history(study), out / "history.png")
    if any(t.intermediate_values for t in study.trials):
        made["curves"] = _save(optuna_plots.plot_intermediate_values(study), out / "curves.png")
    ranked, note = importance_study(study)
    if ranked is not None:
        try:
            axes = optuna_plots.plot_param_importances(ranked)
            axes.set_title(f"Parameter importance ({note})", loc="left", fontsize=10)
            made["importance"] = _save(axes, out / "importance.png")
        except (ValueError, RuntimeError):  # e.g. every trial drew the same values
            pass
    return made


def importance_study(study):
    """The trials to rank parameters on. Pruning leaves few finished trials, and importance from
    two points is noise; so every trial that reached a common evaluation step counts, with its
    value there (an in-memory copy of the study). Falls back to the finished trials."""
    import optuna

    reached = [t for t in study.trials if t.intermediate_values and t.state.name in ("COMPLETE", "PRUNED")]
    if len(reached) >= 3:
        step = min(max(t.intermediate_values) for t in reached)
        ranked = optuna.create_study(direction=study.direction)
        for t in reached:
            value = t.intermediate_values.get(step)
            if value is not None:
                ranked.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=value))
        if len(ranked.trials) >= 3:
            return ranked, f"validation metric at step {step}, the last step all {len(ranked.trials)} trials reached"
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(finished) >= 3:
        return study, f"{len(finished)} finished trials"
    return None, ""


def _save(axes, path: Path) -> str:
    figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
    figure.set_size_inches(8, 4.5)
    figure.set_dpi(110)
    figure.tight_layout()
    return str(write_atomic(path, figure_png(figure)))


def _html(summary: dict[str, Any], columns: list[str], rows: list[dict[str, Any]], plots: dict[str, str], out: Path) -> str:
    sections = []
    if "best_value" in summary:
        best = [[key, _cell(value)] for key, value in summary["best_params"].items()]
        sections.append(("Best trial", html.paragraph(f"trial {summary['best_trial']} (run {summary['best_run']}): "
                                                      f"{summary['metric']} {summary['best_value']:.4f}; its config: best.yaml")
                         + html.table(["parameter", "value"], best)))
    for name, title in (("history", "Optimisation history"), ("curves", "Validation curves (pruned trials stop early)"),
                        ("importance", "Parameter importance")):
        if name in plots:
            sections.append((title, html.image(Path(plots[name]).read_bytes(), title)))
    best_index = next((i for i, r in enumerate(rows) if r["trial"] == summary.get("best_trial")), None)
    sections.append(("Trials", html.table(columns, [[_cell(r.get(c)) for c in columns] for r in rows], best_index)))
    counts = ", ".join(f"{n} {state}" for state, n in summary["trials"].items() if n)
    page = html.page(f"Study {summary['study']}", sections, subtitle=f"{summary['direction']} {summary['metric']}; {counts}.")
    return write_bundle(out, "report", html=page)["html"]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

