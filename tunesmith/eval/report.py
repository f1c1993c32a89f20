"""Evaluation reports: JSON for machines, Markdown for people, both in ``runs/<id>/eval/``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (key, label, format, higher is better)
METRICS = [
    ("loss", "loss (assistant tokens)", "{:.4f}", False),
    ("perplexity", "perplexity", "{:.2f}", False),
    ("rouge_l", "ROUGE-L F1", "{:.3f}", True),
    ("bleu", "BLEU", "{:.2f}", True),
    ("exact_match", "exact match (final answer)", "{:.1%}", True),
]


def rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, base, tuned, change) for every metric both sides have."""
    base, tuned = report["metrics"]["base"], report["metrics"]["tuned"]
    out = []
    for key, label, fmt, higher_better in METRICS:
        if base.get(key) is None or tuned.get(key) is None:
            continue
        delta = tuned[key] - base[key]
        better = delta > 0 if higher_better else delta < 0
        change = ("+" if delta >= 0 else "") + (fmt.format(delta) if key != "exact_match" else f"{delta * 100:.1f} pts")
        out.append((label, fmt.format(base[key]), fmt.format(tuned[key]), change + (" ✓" if better else "")))
    return out


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Evaluation of `{report['run_id']}`",
        "",
        f"Base model `{report['base_model']}` vs the fine-tuned run, on `{report['data']}` "
        f"({report['examples']} examples, greedy decoding, up to {report['max_new_tokens']} new tokens).",
        "",
        "| metric | base | fine-tuned | change |",
        "|---|---|---|---|",
    ]
    lines += [f"| {m} | {b} | {t} | {c} |" for m, b, t, c in rows(report)]
    lines += ["", "## Samples", ""]
    for i, sample in enumerate(report["samples"], 1):
        lines += [f"### {i}. {_one_line(sample['prompt'])}", "",
                  f"- **reference**: {_one_line(sample['reference'])}",
                  f"- **base**: {_one_line(sample['base'])}",
                  f"- **fine-tuned**: {_one_line(sample['tuned'])}", ""]
    return "\n".join(lines)


def write(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / "report.json", directory / "report.md"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    md_path.write_text(to_markdown(report) + "\n")
    return json_path, md_path


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
