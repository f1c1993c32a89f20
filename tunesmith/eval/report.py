"""Evaluation reports in ``runs/<id>/eval/``: JSON for machines, Markdown for people, and a
self-contained HTML page. Generation reports are written here; classification ones by
eval/classify_report.py (``write`` picks by the report's kind)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.eval import classify_report, paired_report
from tunesmith.reports import html, markdown_table, write_bundle

# (key, label, format, higher is better)
METRICS = [
    ("loss", "loss (assistant tokens)", "{:.4f}", False),
    ("perplexity", "perplexity", "{:.2f}", False),
    ("rouge_l", "ROUGE-L F1", "{:.3f}", True),
    ("bleu", "BLEU", "{:.2f}", True),
    ("exact_match", "exact match (final answer)", "{:.1%}", True),
]

# Preference runs: how each model ranks held-out chosen vs rejected answers (eval/preference_eval.py).
PREFERENCE_METRICS = [
    ("preference_accuracy", "prefers chosen (per-token likelihood)", "{:.1%}", True),
    ("preference_accuracy_total", "prefers chosen (total likelihood)", "{:.1%}", True),
    ("chosen_loss", "loss of chosen answers", "{:.4f}", False),
    ("chosen_perplexity", "perplexity of chosen answers", "{:.2f}", False),
    ("rejected_loss", "loss of rejected answers", "{:.4f}", None),
]

# Column order of the side-by-side table: baselines first, the fine-tuned model last.
SIDES = [("base", "base"), ("few_shot", "base, few-shot prompt"), ("tuned", "fine-tuned")]


def sides(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The systems of the table in column order; ``--against`` ones (eval/generation_eval.py's
    ``against:NAME`` keys) after the baselines, before the fine-tuned model."""
    known = [(key, title) for key, title in SIDES if key in report["metrics"]]
    against = [(key, key.removeprefix("against:")) for key in report["metrics"] if key.startswith("against:")]
    return known[:-1] + against + known[-1:] if against else known


def rows(report: dict[str, Any]) -> list[list[str]]:
    """[metric, one value per side..., change of the fine-tuned model against the best baseline]."""
    present = sides(report)
    out = []
    for key, label, fmt, higher_better in PREFERENCE_METRICS if report.get("kind") == "preference" else METRICS:
        values = {side: report["metrics"][side].get(key) for side, _ in present}
        if values.get("tuned") is None or values.get("base") is None:
            continue
        baselines = [v for side, v in values.items() if side != "tuned" and v is not None]
        best = max(baselines) if higher_better in (True, None) else min(baselines)
        delta = values["tuned"] - best
        better = higher_better is not None and (delta > 0 if higher_better else delta < 0)
        change = ("+" if delta >= 0 else "") + (fmt.format(delta) if "%" not in fmt else f"{delta * 100:.1f} pts")
        out.append([label] + [fmt.format(values[s]) if values[s] is not None else "–" for s, _ in present]
                   + [change + (" ✓" if better else "")])
    return out


def header(report: dict[str, Any]) -> list[str]:
    if report.get("kind") == "preference":
        return ["metric", "starting point"] + [t for k, t in sides(report) if k.startswith("against:")] + ["tuned", "change"]
    return ["metric"] + [title for _, title in sides(report)] + ["change vs best baseline"]


FORGETTING_HEADER = ["general data", "base", "fine-tuned", "change"]


def forgetting_rows(report: dict[str, Any]) -> list[list[str]]:
    """Base vs tuned on general data (eval/forgetting.py): what the specialisation cost."""
    f = report["forgetting"]
    base, tuned, change = f["base"], f["tuned"], f["change"]
    return [
        ["loss (general conversations)", f"{base['loss']:.4f}", f"{tuned['loss']:.4f}", f"{change['loss']:+.4f}"],
        ["perplexity (general conversations)", f"{base['perplexity']:.2f}", f"{tuned['perplexity']:.2f}",
         f"{change['perplexity'] / base['perplexity']:+.1%}"],
        [f"general questions answered ({base['questions']})", f"{base['question_accuracy']:.1%}",
         f"{tuned['question_accuracy']:.1%}", f"{change['question_accuracy'] * 100:+.1f} pts"],
    ]


def preference_lines(report: dict[str, Any]) -> list[str]:
    """The rewards and the win rate of a preference run, as sentences."""
    r = report["rewards"]
    return [f"Win rate over the starting point: **{report['win_rate']:.1%}** of {report['examples']} held-out pairs "
            "are separated further (chosen minus rejected, per-token log-likelihood).",
            f"Implicit rewards (beta {r['beta']}): accuracy **{r['accuracy']:.1%}**, mean margin {r['margin']:.3f} "
            f"(chosen {r['chosen']:+.3f}, rejected {r['rejected']:+.3f})."]


def judge_lines(report: dict[str, Any]) -> list[str]:
    """The LLM judge's verdicts (eval/judge.py): the fine-tune against each other system."""
    return [line for comparison in report["judge"]["comparisons"] for line in comparison["lines"]]


def lm_eval_rows(report: dict[str, Any]) -> list[list[str]]:
    """lm-evaluation-harness's metrics (``tunesmith eval --lm-eval``, eval/lm_eval.py): task, metric, value."""
    return [[task, metric, f"{value:.4f}"] for task, metrics in report["lm_eval"]["tasks"].items()
            for metric, value in metrics.items()]


LM_EVAL_HEADER = ["task", "metric", "value"]


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Evaluation of `{report['run_id']}`",
        "",
        f"Base model `{report['base_model']}` vs the fine-tuned run, on `{report['data']}` "
        f"({report['examples']} examples, greedy decoding, up to {report['max_new_tokens']} new tokens).",
        "",
        *markdown_table(header(report), rows(report)),
    ]
    if report.get("kind") == "preference":
        lines += [""] + [f"{line}  " for line in preference_lines(report)]
    if report.get("few_shot"):
        lines += ["", f"Few-shot prompt: {report['few_shot']['shots']} training conversations before each test one."]
    if report.get("forgetting"):
        lines += ["", "## Forgetting", "", *markdown_table(FORGETTING_HEADER, forgetting_rows(report))]
    lines += paired_report.markdown_lines(report.get("paired"))
    if report.get("judge"):
        lines += ["", "## LLM judge", ""] + [f"{line}  " for line in judge_lines(report)]
    if report.get("lm_eval"):  # eval/lm_eval.py
        lines += ["", f"## lm-evaluation-harness ({report['lm_eval']['model']})", "",
                  *markdown_table(LM_EVAL_HEADER, lm_eval_rows(report))]
    lines += ["", "## Samples", ""]
    for i, sample in enumerate(report["samples"], 1):
        lines += [f"### {i}. {_one_line(sample['prompt'])}", "",
                  f"- **reference{' (chosen)' if report.get('kind') == 'preference' else ''}**: "
                  f"{_one_line(sample['reference'])}",
                  f"- **{'starting point' if report.get('kind') == 'preference' else 'base'}**: "
                  f"{_one_line(sample['base'])}"]
        if "few_shot" in sample:
            lines.append(f"- **base, few-shot**: {_one_line(sample['few_shot'])}")
        lines += [f"- **fine-tuned**: {_one_line(sample['tuned'])}", ""]
    return "\n".join(lines)


def to_html(report: dict[str, Any]) -> str:
    summary = html.table(header(report), rows(report))
    if report.get("kind") == "preference":
        summary += "".join(html.paragraph(line.replace("**", "")) for line in preference_lines(report))
    if report.get("few_shot"):
        summary += html.paragraph(f"Few-shot prompt: {report['few_shot']['shots']} training conversations "
                                  "before each test one.")
    timing = html.table(["model", "seconds"], [[title, report["metrics"][key].get("seconds", "–")]
                                               for key, title in sides(report)])
    sample_header = ["prompt", "reference"] + [title for _, title in sides(report)]
    samples = html.table(sample_header, [[s["prompt"], s["reference"]] + [s.get(k, "") for k, _ in sides(report)]
                                         for s in report["samples"]])
    subtitle = (f"Run <code>{html.escape(report['run_id'])}</code>, base model "
                f"<code>{html.escape(str(report['base_model']))}</code>, data <code>{html.escape(report['data'])}</code>: "
                f"{report['examples']} examples, greedy decoding, up to {report['max_new_tokens']} new tokens.")
    sections = [("Metrics side by side", summary)] + paired_report.html_section(report.get("paired"))
    if report.get("judge"):
        sections.append(("LLM judge", "".join(html.paragraph(line.replace("`", "")) for line in judge_lines(report))))
    if report.get("forgetting"):
        sections.append(("Forgetting: general data", html.table(FORGETTING_HEADER, forgetting_rows(report))))
    if report.get("lm_eval"):  # eval/lm_eval.py
        sections.append(("lm-evaluation-harness", html.table(LM_EVAL_HEADER, lm_eval_rows(report))))
    return html.page(f"Evaluation: {report['run_id']}", sections + [("Samples", samples), ("Time", timing)], subtitle)


def write(report: dict[str, Any], directory: Path) -> dict[str, str]:
    """Write every report file; returns their paths by kind."""
    if report.get("kind") == "classification":
        return write_bundle(directory, "report", data=report) | classify_report.write(report, directory)
    return write_bundle(directory, "report", data=report, markdown=to_markdown(report) + "\n", html=to_html(report))


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
