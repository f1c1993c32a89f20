"""The card written next to a cleaned file: what went in, what came out and why, with plots.

    <out>.card.json   the summary and output statistics
    <out>.card.md     the same for people, linking the plots
    <out>.lengths.png length histogram of the kept records
    <out>.labels.png  label distribution (classification)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tunesmith.data.card import LengthStats, label_distribution
from tunesmith.data.clean import CleanSummary
from tunesmith.data.formats import Format
from tunesmith.data.io import read_rows
from tunesmith.data.normalize import text_slots
from tunesmith.data.plots import bars_png, histogram_png
from tunesmith.reports import markdown_table, write_bundle


def write_card(summary: CleanSummary, out: Path, count_tokens: Callable[[str], int] | None = None) -> dict[str, Any]:
    fmt = Format(summary.format) if summary.format else None
    lengths, labels = _output_stats(out, fmt, count_tokens)
    unit = "tokens" if count_tokens else "words"
    card = {**summary.to_dict(), "length_unit": unit,
            "lengths": vars(LengthStats.of(lengths)) if lengths else None, "labels": labels, "plots": {}}
    base = out.with_name(out.name.rsplit(".", 1)[0])
    if lengths:
        card["plots"]["lengths"] = str(histogram_png(lengths, Path(f"{base}.lengths.png"),
                                                     f"length of kept records ({unit})", unit))
    if labels:
        card["plots"]["labels"] = str(bars_png(labels, Path(f"{base}.labels.png"), "label distribution"))
    card["outputs"]["card"] = write_bundle(out.parent, f"{base.name}.card", data=card, markdown=to_markdown(card))["markdown"]
    return card


def _output_stats(out: Path, fmt: Format | None, count_tokens) -> tuple[list[int], dict[str, int]]:
    lengths, records = [], []
    if fmt is None:
        return lengths, {}
    for row in read_rows(out):
        if not isinstance(row.value, dict):
            continue
        text = "\n".join(c[k] for c, k, _ in text_slots(row.value, fmt))
        lengths.append(count_tokens(text) if count_tokens else len(text.split()))
        if fmt is Format.CLASSIFICATION:
            records.append({"label": row.value.get("label")})
    return lengths, label_distribution(records) if records else {}


def to_markdown(card: dict[str, Any]) -> str:
    lines = ["# Cleaning report", "",
             f"- input records: **{card['input_records']:,}**",
             f"- kept: **{card['kept']:,}**, removed: **{card['removed']:,}** "
             f"({'balanced' if card['balanced'] else 'NOT BALANCED'}: input = kept + removed), "
             f"modified and kept: {card['modified']:,}",
             f"- format: {card['format']}", "", "## Removed, by step", "",
             *markdown_table(["step", "records"], _counts(sorted(card["removed_by_step"].items(), key=lambda x: -x[1]))),
             "", "## Removed, by reason", "",
             *markdown_table(["reason", "records"], _counts(sorted(card["removed_by_reason"].items(), key=lambda x: -x[1]))),
             "", "## Personal data found", "",
             *markdown_table(["type", "occurrences"], _counts(sorted(card["personal_data"].items())) or [["none", 0]])]
    if card["lengths"]:
        s = card["lengths"]
        lines += ["", f"## Lengths of kept records ({card['length_unit']})", "",
                  f"min {s['min']}, median {s['median']:g}, p95 {s['p95']}, max {s['max']}", ""]
        if "lengths" in card["plots"]:
            lines.append(f"![lengths]({Path(card['plots']['lengths']).name})")
    if card["labels"]:
        lines += ["", "## Labels", "", *markdown_table(["label", "records"], _counts(card["labels"].items()))]
        lines += ["", f"![labels]({Path(card['plots']['labels']).name})"]
    lines += ["", f"Rejected and changed records, with their original line numbers: `{card['outputs']['rejects']}`", ""]
    return "\n".join(lines)


def _counts(items) -> list[list[str]]:
    return [[name, f"{n:,}"] for name, n in items]
