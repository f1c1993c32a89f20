"""The monitoring report as one self-contained page (the report page helpers, reports/html.py)."""
from __future__ import annotations

import time
from typing import Any

from tunesmith.reports import html


def to_html(report: dict[str, Any], figures: dict[str, bytes]) -> str:
    t, f = report["traffic"], report["feedback"]
    alerts = html.table(["alert", "what", "value", "threshold"],
                        [[a["kind"], a["message"], _num(a["value"]), _num(a["threshold"])] for a in report["alerts"]]) \
        if report["alerts"] else html.paragraph("No threshold crossed.")
    if report.get("retrain_recommended"):
        alerts += html.paragraph("Retraining is recommended: tunesmith monitor MODEL --retrain builds the next dataset "
                                 "and submits a fine-tuning job.")
    latency = t["latency_ms"] or {}
    traffic_rows = [["requests", t["requests"]], ["texts (classification inputs count one each)", t["texts"]],
                    ["error rate", f"{t['error_rate']:.1%}"], ["latency p50 / p95 ms",
                    f"{latency.get('p50', 0):.0f} / {latency.get('p95', 0):.0f}" if latency else "–"],
                    ["prompt / completion tokens", f"{t['tokens']['prompt']:,} / {t['tokens']['completion']:,}"],
                    ["inputs logged with their text", t["with_content"]],
                    ["rated answers (bad)", f"{f['rated']} ({f['bad']})"], ["corrections", f["corrections"]]]
    sections = [("Alerts", alerts), ("Traffic", html.table(["", ""], traffic_rows)
                                     + html.table(["day", "requests"], sorted(t["per_day"].items())))]
    if "latency" in figures:
        sections[-1] = (sections[-1][0], sections[-1][1] + html.image(figures["latency"], "latency histogram"))
    drift_rows = [[name, test["test"], _num(test["p_value"]), _num(test.get("effect")), _details(name, test)]
                  for name, test in report["drift"].items() if "p_value" in test]
    if drift_rows:
        content = html.table(["input", "test", "p-value", "effect", "details"], drift_rows)
        for name in ("lengths", "labels"):
            if name in figures:
                content += html.image(figures[name], name)
        sections.append(("Drift against the training data", content))
    confidence = report["drift"].get("confidence")
    if confidence:
        sections.append(("Classifier confidence", html.paragraph(
            f"Mean confidence of live predictions {confidence['mean']:.2f} (median {confidence['median']:.2f}); "
            f"{confidence['low_share']:.0%} below {confidence['low_threshold']}"
            + (f"; on its training inputs {confidence['reference_mean']:.2f} (one-sided Mann-Whitney p="
               f"{confidence['p_value_lower']:.2g})." if "reference_mean" in confidence else "."))))
    if report["notes"]:
        sections.append(("Notes", "".join(html.paragraph(n) for n in report["notes"])))
    since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report["since"]))
    source = report.get("reference", {}).get("source", "none")
    return html.page(f"Monitoring: {report['model']}", sections,
                     f"Requests since {since}; training inputs from <code>{html.escape(source)}</code>.")


def _details(name: str, test: dict[str, Any]) -> str:
    if name == "length":
        return f"median words {test['reference_median']:.0f} → {test['live_median']:.0f}, p95 {test['reference_p95']:.0f} → {test['live_p95']:.0f}"
    if name == "vocabulary":
        return (f"unseen words {test['unseen_word_share']:.1%} (expected {test['reference_baseline_unseen_share']:.1%}); "
                f"new: {', '.join(test['new_words'][:8])}")
    if name == "embedding":
        return f"{test['reference_samples']} vs {test['live_samples']} inputs, centroid cosine {test['centroid_cosine']:.3f}"
    if name == "labels":
        return ", ".join(f"{c['label']} {c['training']:.0%}→{c['live']:.0%}" for c in test["largest_changes"][:5])
    return ""


def _num(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if isinstance(value, float) else str(value)
