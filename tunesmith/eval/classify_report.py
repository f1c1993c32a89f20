"""The classification report: Markdown summary, self-contained HTML, confusion CSV and PNGs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.eval import paired_report, plots
from tunesmith.files import write_atomic
from tunesmith.reports import html, markdown_table, write_bundle, write_csv

# (key, header, format)
SYSTEM_COLUMNS = [
    ("accuracy", "accuracy", "{:.2%}"),
    ("macro_f1", "macro F1", "{:.4f}"),
    ("weighted_f1", "weighted F1", "{:.4f}"),
    ("macro_precision", "macro P", "{:.4f}"),
    ("macro_recall", "macro R", "{:.4f}"),
    ("micro_f1", "micro F1", "{:.4f}"),
    ("ece", "ECE", "{:.4f}"),
]


def system_rows(report: dict[str, Any], compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """The side-by-side table; ``compact`` keeps the columns that fit a terminal."""
    columns = [c for c in SYSTEM_COLUMNS if not compact or c[0] in ("accuracy", "macro_f1", "ece")]
    header = ["system", "examples"] + [h for _, h, _ in columns] + ["p50 latency", "p95 latency", "examples/s"]
    rows = []
    for s in report["systems"]:
        row = [s["name"], f"{s['examples']:,}"]
        row += [fmt.format(s[key]) if s.get(key) is not None else "–" for key, _, fmt in columns]
        latency = s.get("latency") or {}
        row += [f"{latency['p50_ms']:.1f} ms" if latency else "–", f"{latency['p95_ms']:.1f} ms" if latency else "–",
                f"{s['examples_per_second']:,}" if s.get("examples_per_second") else "–"]
        rows.append(row)
    return header, rows


CONFUSION_HEADER = ["true", "predicted", "count", "share of true"]
PER_CLASS_HEADER = ["label", "precision", "recall", "F1", "support"]


def confusion_rows(fine: dict[str, Any]) -> list[list[Any]]:
    return [[c["true"], c["predicted"], c["count"], f"{c['share_of_true']:.1%}"] for c in fine["top_confusions"]]


def per_class_rows(fine: dict[str, Any]) -> list[list[Any]]:
    return [[c["label"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"]]
            for c in fine["per_class"]]


def sample_notes(report: dict[str, Any]) -> list[str]:
    return [f"{s['name']}: on a stratified sample of {s['examples']} test examples, where the fine-tuned model "
            f"scores {s['fine_tuned_accuracy_same_examples']:.2%} accuracy."
            for s in report["systems"] if "fine_tuned_accuracy_same_examples" in s]


def to_markdown(report: dict[str, Any]) -> str:
    header, rows = system_rows(report)
    fine = report["fine_tuned"]
    lines = [f"# Evaluation of `{report['run_id']}` (classification)", "",
             f"Base model `{report['base_model']}`, test data `{report['data']}`: {report['examples']:,} examples, "
             f"{len(report['labels'])} labels.", "", *markdown_table(header, rows)]
    lines += [""] + [f"- {n}" for n in sample_notes(report) + report.get("notes", [])]
    lines += ["", f"Expected calibration error of the fine-tuned model: {fine['calibration']['ece']:.4f}.", "",
              "## Top confusions", "", *markdown_table(CONFUSION_HEADER, confusion_rows(fine)),
              "", "## Per class (fine-tuned)", "", *markdown_table(PER_CLASS_HEADER, per_class_rows(fine))]
    lines += paired_report.markdown_lines(report.get("paired"))
    lines += out_of_scope_lines(report.get("out_of_scope"))
    lines += ["", "Files: report.html (plots embedded), confusion.csv, confusion.png, reliability.png."]
    return "\n".join(lines)


def out_of_scope_lines(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    lines = ["", f"## Out of scope (`{section['label']}`)", ""]
    if section.get("threshold") is None:
        return lines + [section.get("note", "")]
    rows = [[name, f"{f['threshold']:g}", _pct(f["in_scope_accuracy"]), _pct(f["out_of_scope_recall"]),
             _pct(f["out_of_scope_precision"])]
            for name, f in (("test, threshold chosen on validation", section["test"]), ("test, plain argmax", section["argmax"]),
                            ("validation", section["validation"]))]
    return lines + [f"Below a top in-scope probability of {section['threshold']:g} (chosen on {section['chosen_on']}) "
                    f"the answer is `{section['label']}`.", "",
                    *markdown_table(["", "threshold", "in-scope accuracy", "out-of-scope recall",
                                     "out-of-scope precision"], rows)]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def to_html(report: dict[str, Any], figures: dict[str, bytes]) -> str:
    header, rows = system_rows(report)
    fine = report["fine_tuned"]
    summary = html.table(header, rows, highlight=0)
    summary += "".join(html.paragraph(n) for n in sample_notes(report) + report.get("notes", []))
    summary += html.image(figures["systems"], "accuracy of every system")
    per_class = html.table(PER_CLASS_HEADER, per_class_rows(fine))
    confusions = html.table(CONFUSION_HEADER, confusion_rows(fine))
    calibration = html.paragraph(f"Expected calibration error (10 equal-width bins): {fine['calibration']['ece']:.4f}; "
                                 f"mean confidence {fine['calibration']['mean_confidence']:.3f}.")
    calibration += html.image(figures["reliability"], "reliability diagram")
    errors = html.table(["line", "text", "label", "predicted", "confidence"],
                        [[e["line"], e["text"], e["label"], e["predicted"], f"{e['confidence']:.1%}"]
                         for e in report["errors"]]) if report["errors"] else html.paragraph("No errors.")
    details = html.table(["system", "details"], [[s["name"], _details_text(s["details"])] for s in report["systems"]])
    sections = [
        ("Systems side by side", summary),
        *paired_report.html_section(report.get("paired")),
        ("Per class", per_class),
        ("Confusion matrix", html.image(figures["confusion"], "confusion matrix") + confusions),
        ("Calibration", calibration),
        ("Most confident errors", errors),
        ("Baseline details", details),
    ]
    subtitle = (f"Run <code>{html.escape(report['run_id'])}</code>, base model "
                f"<code>{html.escape(str(report['base_model']))}</code>, test data "
                f"<code>{html.escape(report['data'])}</code>: {report['examples']:,} examples, "
                f"{len(report['labels'])} labels.")
    return html.page(f"Evaluation: {report['run_id']}", sections, subtitle)


def write(report: dict[str, Any], directory: Path) -> dict[str, str]:
    fine = report["fine_tuned"]
    systems = report["systems"]
    figures = {
        "confusion": plots.confusion_heatmap(fine["confusion_matrix"], report["labels"]),
        "reliability": plots.reliability_diagram(fine["calibration"]["bins"], fine["calibration"]["ece"]),
        "systems": plots.system_bars([s["name"] for s in systems], [s["accuracy"] for s in systems], "accuracy"),
    }
    files = write_bundle(directory, "report", markdown=to_markdown(report) + "\n", html=to_html(report, figures))
    files["confusion_csv"] = str(write_csv(directory / "confusion.csv", ["true \\ predicted"] + report["labels"],
                                           [[label] + row for label, row in zip(report["labels"], fine["confusion_matrix"])]))
    files["confusion_png"] = str(write_atomic(directory / "confusion.png", figures["confusion"]))
    files["reliability_png"] = str(write_atomic(directory / "reliability.png", figures["reliability"]))
    return files


def _details_text(details: dict[str, Any]) -> str:
    parts = []
    for key, value in details.items():
        parts.append(f"{key}: {value}")
    return "; ".join(parts) or "–"
