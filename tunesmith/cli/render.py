"""Rich renderings of API results for the terminal (used by the CLI only)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from tunesmith.data.card import DatasetCard
from tunesmith.data.validate import ValidationReport
from tunesmith.eval.report import header as eval_header, rows as eval_rows


def models_table(listings) -> Table:
    table = Table(title="models")
    for column in ("name", "architecture", "parameters", "pulled", "size", "description"):
        table.add_column(column)
    for m in listings:
        table.add_row(m.name, m.architecture, m.parameters, "yes" if m.pulled else "no",
                      _bytes(m.size_bytes) if m.size_bytes else "-", m.description)
    return table


def issues_table(report: ValidationReport, limit: int = 200) -> Table:
    table = Table(title=f"{report.path}: {len(report.issues)} problem(s)"
                        f"{'' if not report.format else f' (format: {report.format.value})'}")
    for column in ("line", "field", "problem", "code"):
        table.add_column(column)
    for issue in report.issues[:limit]:
        table.add_row(str(issue.line or "-"), issue.field or "-", issue.message, issue.code)
    if len(report.issues) > limit:
        table.caption = f"{len(report.issues) - limit} more; use --json for all"
    return table


def card_panel(card: DatasetCard) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_row("format", card.format)
    table.add_row("records", f"{card.records:,}")
    if card.lengths:
        s = card.lengths
        table.add_row(f"tokens ({card.model})", f"min {s.min}  median {s.median:g}  p95 {s.p95}  max {s.max}")
        table.add_row(f"over max_length {card.max_length}", f"{card.over_max_length}")
        table.add_row("training tokens / epoch", f"{card.tokens_per_epoch:,}")
    if card.loss_tokens_per_epoch is not None:
        table.add_row("loss-carrying tokens / epoch", f"{card.loss_tokens_per_epoch:,} (assistant turns)")
    if card.estimated_seconds_per_epoch is not None:
        table.add_row("estimated training time", f"~{_duration(card.estimated_seconds_per_epoch)} per epoch on this machine (LoRA, rough)")
    pii = ", ".join(f"{kind} {n}" for kind, n in card.personal_data.items())
    table.add_row("records with personal data", f"[yellow]{pii}[/] (tunesmith data clean redacts it)" if pii else "none found")
    parts: list[Any] = [table]
    if card.labels:
        labels = Table(title="labels")
        labels.add_column("label")
        labels.add_column("count", justify="right")
        labels.add_column("share", justify="right")
        for label, count in card.labels.items():
            labels.add_row(label, str(count), f"{count / card.records:.1%}")
        parts.append(labels)
    parts += [f"[yellow]note:[/] {n}" for n in card.notes]
    return Panel(Group(*parts), title=f"[green]valid[/] {card.path}")


def clean_table(card: dict[str, Any]) -> Table:
    table = Table(title=f"cleaned: {card['input_records']:,} in = {card['kept']:,} kept + {card['removed']:,} removed"
                        f"{'' if card['balanced'] else '  (NOT BALANCED)'}")
    table.add_column("")
    table.add_column("records", justify="right")
    for reason, count in sorted(card["removed_by_reason"].items(), key=lambda x: -x[1]):
        table.add_row(f"removed: {reason}", f"{count:,}")
    table.add_row("modified and kept", f"{card['modified']:,}")
    for kind, count in sorted(card["personal_data"].items()):
        table.add_row(f"personal data: {kind}", f"{count:,}")
    outputs = card["outputs"]
    table.caption = f"kept: {outputs['output']}\nrejects: {outputs['rejects']}\ncard: {outputs.get('card', '-')}"
    return table


@contextmanager
def counting_progress(console: Console, label: str):
    """A spinner with a record count on a terminal (silent otherwise); yields the update callback."""
    if not console.is_terminal:
        yield None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn(f"{label} {{task.completed:,}} records"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(label, total=None)
        yield lambda n: progress.update(task, completed=n)


def split_table(card: dict[str, Any]) -> Table:
    table = Table(title=f"split (seed {card['seed']}{', stratified on ' + card['stratify'] if card['stratify'] else ''})")
    for column in ("split", "records", "label-share deviation", "worst label vs its expected count", "file"):
        table.add_column(column)
    deviation = card.get("max_label_share_deviation_pp", {})
    worst = card.get("worst_label_deviation", {})
    for name, n in card["records"].items():
        dev, w = deviation.get(name), worst.get(name)
        table.add_row(name, str(n), "-" if dev is None else f"{dev:.2f} pp",
                      "-" if not w else f"{w['label']}: {w['count']} for {w['expected']:g} ({w['relative']:.0%})",
                      card["files"][name])
    leaks = ", ".join(f"{pair}: {v['exact']} exact / {v['near']} near" for pair, v in card["leakage"].items())
    rare = f"\nlabels too rare for every split: {', '.join(card['rare_labels'])}" if card.get("rare_labels") else ""
    rare += "".join(f"\n{name}: outside ±20 % of the expected count (near-duplicate groups too large to place): "
                    + ", ".join(f"{label} {v['count']} for {v['expected']:g}" for label, v in off.items())
                    for name, off in card.get("labels_off", {}).items())
    if card.get("extra_columns"):
        rare += ("\ncolumns beyond the format's, kept (--drop-columns to leave out): "
                 + ", ".join(f"{c} ({n} rows filled)" for c, n in card["extra_columns"].items()))
    kept = (f"{card['near_duplicate_groups']} near-duplicate groups kept whole" if not card.get("groups_split_across")
            else f"{card['near_duplicate_groups']} near-duplicate groups, {card['groups_split_across']} cut across "
                 f"splits by --max-group-share")
    table.caption = (f"{kept}; leakage {leaks}{rare}"
                     f"\ncard: {card['card']}")
    return table


def leakage_table(found: dict[str, Any]) -> Table:
    table = Table(title=f"{found['b']} vs {found['a']}: {found['exact_overlaps']} exact, "
                        f"{found['near_overlaps']} near-duplicate overlaps")
    for column in ("kind", "line in A", "line in B", "text in B"):
        table.add_column(column)
    for example in found["examples"]:
        table.add_row(example["kind"], str(example["a_line"]), str(example["b_line"]), example["b"][:80])
    return table


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"run {summary['run_id']}", show_header=False)
    for key in ("base_model", "method", "precision", "labels", "global_step", "epochs", "train_examples",
                "validation_examples", "first_train_loss", "last_train_loss", "best_eval_loss", "best_eval_macro_f1",
                "best_eval_accuracy", "trained_loss_tokens", "input_tokens_per_second", "train_seconds"):
        if key not in summary:
            continue
        value = summary[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) and key.startswith(("first", "last", "best"))
                      else str(value))
    return table


def estimate_table(estimate) -> Table:
    """`tunesmith train --dry-run`: the pre-flight estimate (training/estimate.py)."""
    e = estimate

    def size(n):
        return "-" if n is None else f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"

    def span(seconds):
        return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"

    table = Table(title=f"estimate: {e.recipe} / {e.method} on {e.device}", show_header=False)
    rows = [
        ("peak RAM (RSS)", f"{size(e.peak_rss_bytes)}  (free now {size(e.free_ram_bytes)})"),
        ("peak GPU memory", "-" if e.peak_gpu_bytes is None else f"{size(e.peak_gpu_bytes)}  (free now {size(e.free_gpu_bytes)})"),
        ("training examples", str(e.train_examples)),
        ("tokens per epoch", f"{e.tokens_per_epoch:,}  ({e.padded_tokens_per_epoch:,} with padding; longest example {e.longest_example_tokens})"),
        ("optimizer steps", f"{e.steps_per_epoch} per epoch, {e.total_steps} in all ({e.epochs:g} epochs)"),
        ("time per step", f"{e.seconds_per_step:.2f} s (mean of {e.measured_steps} measured; warm-up excluded)"),
        ("time per epoch", f"{span(e.seconds_per_epoch)}  (training {span(e.train_seconds_per_epoch)} + "
                           f"{e.evals_per_epoch} evaluation(s) × {e.eval_seconds:.1f} s + {e.saves_per_epoch} save(s) × {e.save_seconds:.1f} s)"),
        ("time in all", span(e.total_seconds)),
        ("checkpoint disk", f"{size(e.disk_bytes)}  ({e.checkpoints_kept} kept × {size(e.checkpoint_bytes)} + final weights {size(e.final_weights_bytes)})"),
        ("fits", "yes" if e.fits else "NO: " + "; ".join(e.problems())),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def runs_table(runs) -> Table:
    table = Table(title="runs")
    for column in ("id", "status", "base model", "method", "best val loss"):
        table.add_column(column)
    for run in runs:
        info = run.info()
        best = run.summary().get("best_eval_loss")
        table.add_row(run.id, info.get("status", "?"), str(info.get("base_model")), info.get("method", "?"),
                      f"{best:.4f}" if isinstance(best, float) else "-")
    return table


def tracked_runs_table(rows: list[dict[str, Any]]) -> Table:
    from pathlib import Path

    from tunesmith.tracking.views import started_text

    table = Table(title=f"{len(rows)} runs")
    for column in ("run", "kind", "status", "recipe", "method", "base model", "started", "val loss", "test"):
        table.add_column(column, no_wrap=column in ("run", "started"))
    for r in rows:
        figure = (f"best {_number(r.get('best'))}" if r["kind"] == "study" else
                  f"{r['test_metric']} {_number(r['test'])}" if r.get("test") is not None else "-")
        status = str(r["status"]).lower() + ("" if r["tracked"] else " [yellow](untracked)[/]")
        table.add_row(_escape(r["run"]), r["kind"], status, r.get("recipe") or "-", r.get("method") or "-",
                      _escape(Path(r.get("base_model") or "-").name), started_text(r.get("started")),
                      _number(r.get("val loss")), figure)
    return table


def print_tracked_run(console: Console, shown: dict[str, Any]) -> None:
    console.print(f"[bold]{_escape(shown['run'])}[/]  {shown['kind']}  {shown['status']}  "
                  f"MLflow run {shown['mlflow_run_id']} in {_escape(shown['tracking_uri'])}", highlight=False)
    metrics = Table(title="metrics (last value, points logged)")
    for column in ("metric", "last", "points"):
        metrics.add_column(column)
    for key, value in shown["metrics"].items():
        metrics.add_row(key, _number(value["last"]), str(value["points"]))
    params = Table(title="parameters", show_header=False)
    for key, value in shown["params"].items():
        params.add_row(key, _escape(value))
    console.print(metrics, params)
    for d in shown["datasets"]:
        console.print(f"dataset {d['name']}: {_escape(d['source'])}  digest {d['digest']}  {d['profile']}", highlight=False)
    console.print(f"tags: {', '.join(f'{k}={v}' for k, v in shown['tags'].items())}", highlight=False, markup=False)
    console.print(f"artefacts: {', '.join(shown['artifacts']) or '-'}", highlight=False, markup=False)
    for child in shown["children"]:
        console.print(f"{child['kind']} {_escape(child['run'])} (MLflow {child['mlflow_run_id']}): "
                      f"{child['status'].lower()}, {len(child['metrics'])} metrics", highlight=False)


def tracked_compare_table(compared: dict[str, Any]) -> Table:
    grid = Table(title=f"{len(compared['runs'])} runs: parameters that differ ({compared['same_params']} the same), then metrics")
    grid.add_column("")
    for name in compared["runs"]:
        grid.add_column(name, overflow="fold")
    for key, values in compared["params"].items():
        grid.add_row(key, *[_escape(str(v)) if v is not None else "-" for v in values])
    grid.add_section()
    for key, values in compared["metrics"].items():
        grid.add_row(key, *[_number(v) for v in values])
    return grid


def trials_table(summary: dict[str, Any]) -> Table:
    from tunesmith.tuning.report import trial_columns

    # The run ids and workers are in trials.csv / report.html; a terminal has room for the figures.
    columns = [c for c in trial_columns(summary["rows"]) if c not in ("run", "worker")]
    table = Table(title=f"study {summary['study']}: {summary['direction']} {summary['metric']}")
    for column in columns:
        table.add_column(column.split(".")[-1], no_wrap=True)
    for row in summary["rows"]:
        style = "bold" if row["trial"] == summary.get("best_trial") else None
        cells = [f"{v:.3g}" if isinstance(v, float) else _number(v) for v in (row.get(c) for c in columns)]
        table.add_row(*[_escape(c) for c in cells], style=style)
    return table


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_eval(console: Console, report: dict[str, Any]) -> None:
    if report.get("kind") == "classification":
        _print_classification(console, report)
    else:
        _print_generation(console, report)
    _print_paired(console, report)
    for comparison in (report.get("judge") or {}).get("comparisons", []):  # eval --judge
        print_judge(console, comparison)
    if report.get("lm_eval"):  # eval --lm-eval
        print_lm_eval(console, report["lm_eval"])
    files = report.get("report_files", {})
    if files:
        console.print("reports: " + "  ".join(files[k] for k in ("html", "markdown", "json") if k in files),
                      highlight=False)


def print_lm_eval(console: Console, result: dict[str, Any]) -> None:
    """lm-evaluation-harness's metrics per task (eval/lm_eval.py)."""
    table = Table(title=f"lm-evaluation-harness on {result['model']}" + (f" (limit {result['limit']})" if result.get("limit") else ""))
    for column in ("task", "metric", "value"):
        table.add_column(column)
    for task, metrics in result["tasks"].items():
        for metric, value in metrics.items():
            table.add_row(task, metric, f"{value:.4f}")
    console.print(table)


def print_judge(console: Console, report: dict[str, Any]) -> None:
    """A judge's verdict (eval/judge.py), its calibration, and where the reports went."""
    for line in report["lines"]:
        console.print(line.replace("`", ""), style="bold yellow" if line.startswith("Warning") else None,
                      highlight=False)
    files = report.get("report_files", {})
    if files:
        console.print("reports: " + "  ".join(files[k] for k in ("markdown", "json") if k in files), highlight=False)


def _print_paired(console: Console, report: dict[str, Any]) -> None:
    """Won / lost / tied and the paired test per pair of systems; regressions as red warnings."""
    from tunesmith.eval.paired_report import terminal_lines

    for line in terminal_lines(report.get("paired")):
        console.print(line, style="bold red" if line.startswith("warning:") else None, highlight=False, markup=False)


def _print_generation(console: Console, report: dict[str, Any]) -> None:
    compared = "starting point vs tuned" if report.get("kind") == "preference" else "baselines vs fine-tuned"
    unit = "pairs" if report.get("kind") == "preference" else "examples"
    table = Table(title=f"{report['run_id']}: {compared} on {report['examples']} held-out {unit}")
    for column in eval_header(report):
        table.add_column(column)
    for row in eval_rows(report):
        table.add_row(*row)
    console.print(table)
    if report.get("kind") == "preference":
        from tunesmith.eval.report import preference_lines
        for line in preference_lines(report):
            console.print(line.replace("**", ""), highlight=False, markup=False)
    if report.get("forgetting"):
        from tunesmith.eval.report import FORGETTING_HEADER, forgetting_rows
        forgetting = Table(title="forgetting: base vs fine-tuned on general data")
        for column in FORGETTING_HEADER:
            forgetting.add_column(column)
        for row in forgetting_rows(report):
            forgetting.add_row(*row)
        console.print(forgetting)
    for i, sample in enumerate(report["samples"], 1):
        few_shot = f"[bold]base, few-shot:[/] {_escape(sample['few_shot'])}\n" if "few_shot" in sample else ""
        console.print(Panel(
            f"[bold]reference:[/] {_escape(sample['reference'])}\n[bold]base:[/] {_escape(sample['base'])}\n"
            f"{few_shot}[bold]fine-tuned:[/] {_escape(sample['tuned'])}",
            title=f"sample {i}: {_escape(sample['prompt'][:100])}", title_align="left"))


def _print_classification(console: Console, report: dict[str, Any]) -> None:
    from tunesmith.eval.classify_report import sample_notes, system_rows

    header, rows = system_rows(report, compact=True)
    table = Table(title=f"{report['run_id']}: {report['examples']:,} test examples, {len(report['labels'])} labels")
    for column in header:
        table.add_column(column, justify="left" if column == "system" else "right",
                         overflow="fold", min_width=22 if column == "system" else None)
    for i, row in enumerate(rows):
        table.add_row(*[_escape(c) for c in row], style="bold" if i == 0 else None)
    console.print(table)
    for note in sample_notes(report) + report.get("notes", []):
        console.print(f"note: {note}", highlight=False, markup=False)
    confusions = report["fine_tuned"]["top_confusions"][:5]
    if confusions:
        console.print("top confusions: " + "; ".join(f"{c['true']} → {c['predicted']} ({c['count']})"
                                                     for c in confusions), highlight=False, markup=False)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def predictions_table(texts: list[str], results: list[dict[str, Any]]) -> Table:
    table = Table("text", "label", "probability", "runners-up")
    for text, result in zip(texts, results):
        others = ", ".join(f"{t['label']} {t['probability']:.1%}" for t in result["top"][1:])
        table.add_row(_escape(text[:80]), result["label"], f"{result['confidence']:.1%}", _escape(others))
    return table


def predict_file_summary(summary: dict[str, Any]) -> Table:
    table = Table("", "", show_header=False)
    table.add_row("predictions", summary["output"])
    table.add_row("examples", f"{summary['examples']:,}")
    table.add_row("speed", f"{summary['examples_per_second']} examples/s")
    if "accuracy" in summary:
        table.add_row("accuracy (against the file's labels)", f"{summary['accuracy']:.2%}")
    return table


def compare_table(table: dict[str, Any]) -> Table:
    """Runs as columns and figures as rows: a terminal is narrower than the number of figures."""
    runs = table["rows"]
    grid = Table(title=f"{len(runs)} runs")
    grid.add_column("")
    for row in runs:
        grid.add_column(row[0], overflow="fold")
    for i, name in enumerate(table["columns"][1:], start=1):  # column 0, the run id, heads the columns
        grid.add_row(name, *[_escape(str(row[i])) for row in runs])
    return grid


def methods_table(recipe: str) -> Table:
    """Each value of a recipe's ``method`` key and what it trains."""
    import typing

    from tunesmith.config import _RECIPES
    from tunesmith.errors import ConfigError
    from tunesmith.models.adapters import METHODS

    if recipe not in _RECIPES:
        raise ConfigError(f"--recipe: unknown recipe {recipe!r}; choose one of {', '.join(_RECIPES)}")
    field = _RECIPES[recipe].model_fields["method"]
    table = Table(title=f"method (recipe {recipe}; default {field.default})")
    table.add_column("method")
    table.add_column("what it trains", overflow="fold")
    for method in typing.get_args(field.annotation):
        table.add_row(method, METHODS[method])
    return table


def methods_compare_table(table: dict[str, Any]) -> Table:
    """One row per method: few rows, and columns a reader compares down."""
    grid = Table(title="methods on the same data and steps")
    for i, column in enumerate(table["columns"]):
        grid.add_column(column, justify="left" if i == 0 or column in ("test metric", "run") else "right",
                        overflow="fold")
    for row in table["rows"]:
        grid.add_row(*[_escape(str(cell)) for cell in row])
    return grid


def monitor_summary(report: dict[str, Any]) -> Group:
    """Traffic, the drift tests and the alerts of `tunesmith monitor`."""
    t = report["traffic"]
    latency = t["latency_ms"]
    lines = [f"{report['model']}: {t['requests']} request(s), error rate {t['error_rate']:.1%}"
             + (f", latency p50 {latency['p50']:.0f} ms / p95 {latency['p95']:.0f} ms" if latency else "")]
    f = report["feedback"]
    if f["rated"]:
        lines.append(f"ratings: {f['rated']} rated, {f['bad']} bad, {f['corrections']} correction(s)")
    table = Table(title="drift against the training data")
    for column in ("input", "test", "p-value", "effect"):
        table.add_column(column)
    for name, test in report["drift"].items():
        if "p_value" in test:
            effect = test.get("effect")
            table.add_row(name, test["test"], f"{test['p_value']:.3g}", "-" if effect is None else f"{effect:.3f}")
    confidence = report["drift"].get("confidence")
    if confidence:
        lines.append(f"confidence: mean {confidence['mean']:.2f}, {confidence['low_share']:.0%} below {confidence['low_threshold']}")
    alerts = [f"[red]ALERT[/red] {a['kind']}: {a['message']}" for a in report["alerts"]] or ["[green]no alerts[/green]"]
    if report["retrain_recommended"]:
        alerts.append("retraining recommended: tunesmith monitor MODEL --retrain")
    parts = [*lines, *report["notes"]] + ([table] if table.row_count else []) + alerts + [f"report: {report['files']['html']}"]
    return Group(*parts)


def retrain_summary(result: dict[str, Any]) -> str:
    d = result["data"]
    if result.get("status") == "submitted":
        return (f"queued {result['job']} to retrain on {d['records']} records ({d['new']} new: {d['from_feedback']} "
                f"from feedback; {d['replayed']} replayed); a worker trains it, compares it with {result['current']} "
                f"on {result['test']} and promotes it only if it is not worse\nplan: {result['report']}")
    verdict = ("[green]promoted[/green]" + (f" (alias {result['alias']} → {result['candidate']})" if result["alias"] else "")
               if result["promoted"] else "[red]not promoted[/red]: the current model stays")
    return (f"retrained on {d['records']} records ({d['new']} new: {d['from_feedback']} from feedback; "
            f"{d['replayed']} replayed)\n{result['metric']} on {result['test']}: current {result['current_score']:.4f}, "
            f"new {result['candidate_score']:.4f} → {verdict}\nreport: {result['report']}")


# ── export ──────────────────────────────────────────────────────────────────────────────────
def print_export(console: Console, result: dict[str, Any]) -> None:
    quant = f" {result['quant']}" if result.get("quant") else ""
    console.print(f"exported run {result['run']} as {result['format']}{quant} in {result['seconds']:.0f} s: "
                  f"{result['output']}", highlight=False)
    console.print("files: " + "  ".join(result["files"] + ["README.md"]), highlight=False)
    if result.get("parity"):
        print_parity(console, result["parity"])
    else:
        console.print("parity: not checked (--no-check)", highlight=False)


def print_parity(console: Console, report: dict[str, Any] | None) -> None:
    if not report:
        return
    same = round(report["identical"] * report["examples"])
    console.print(f"parity check in {report['runtime']}: {same}/{report['examples']} identical answers "
                  f"({report['identical']:.1%}) on {report['data']}", highlight=False, markup=False)
    table = Table()
    for column in ("metric", "trained", "export"):
        table.add_column(column)
    for metric, value in report["metrics"]["trained"].items():
        table.add_row(metric, f"{value:.4f}", f"{report['metrics']['export'].get(metric, float('nan')):.4f}")
    console.print(table)
    for difference in report["differences"][:3]:
        console.print(f"differs: {difference['prompt'][:80]!r}\n  trained: {difference['trained'][:80]!r}\n"
                      f"  export:  {difference['export'][:80]!r}", highlight=False, markup=False)
    console.print("parity: " + ("passed" if report["passed"] else "FAILED: " + "; ".join(report["failures"])),
                  highlight=False, markup=False)


# ── distillation ────────────────────────────────────────────────────────────────────────────
@contextmanager
def answer_progress(console: Console, label: str):
    """A bar of answers kept out of prompts on a terminal (silent otherwise); yields (done, total) → None."""
    if not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def print_distill(console: Console, report: dict[str, Any]) -> None:
    table = Table(title=f"{report['teacher']} → {report['student']} ({report['held_out_prompts']} held-out prompts)")
    for column in ("system", "agrees with teacher", "ROUGE-L vs teacher", "task exact match"):
        table.add_column(column, justify="left" if column == "system" else "right")
    for name in ("student_before", "student_after", "teacher"):
        row = report["metrics"].get(name)
        if row:
            table.add_row(name.replace("_", " "), *(_share(row.get(k)) for k in ("agreement_exact",)),
                          "-" if row.get("agreement_rouge_l") is None else f"{row['agreement_rouge_l']:.3f}",
                          _share(row.get("task_exact_match")))
    cleaning = report["cleaning"]
    table.caption = (f"run {report['run']}; {report['answers']} teacher answers, {cleaning['kept']} trained on "
                     f"({cleaning['removed']} set aside by cleaning: {cleaning['removed_by_reason'] or 'none'})")
    console.print(table)
    for line in (report.get("judge") or {}).get("lines", []):
        console.print(f"judge: {line}", highlight=False)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"

