"""The "Which examples changed" section of every evaluation report (its ``paired`` part, made by
eval/paired.py): one table of won / lost / tied and the paired test per pair of systems, the
regressions as warnings, then each pair's lost examples (first) and a few won ones with their
prompt, reference and both outputs. Markdown and HTML share the rows built here."""
from __future__ import annotations

from typing import Any

from tunesmith.eval.paired import describe_test
from tunesmith.reports import html, markdown_table

TITLE = "Which examples changed"
HEADER = ["system", "against", "metric", "won", "lost", "tied", "mean difference", "paired test"]
EXAMPLE_HEADER = ["outcome", "example", "prompt", "reference", "this system", "the other", "scores"]


def summary_rows(section: dict[str, Any]) -> list[list[str]]:
    """One row per comparison, then one per secondary metric of it (``also``)."""
    rows = []
    for c in section["comparisons"]:
        rows.append(_row(c, c["system"], c["other"]))
        rows += [_row(a, "", c["other"]) for a in c.get("also", [])]
    return rows


def example_rows(comparison: dict[str, Any]) -> list[list[str]]:
    """The examples written out for one comparison, lost ones first (as eval/paired.py lists them)."""
    return [[e["outcome"], _where(e), _clip(e.get("prompt", "")), _clip(e.get("reference", "")),
             _clip(e.get("system_output", "")), _clip(e.get("other_output", "")),
             f"{_number(e['system_score'])} vs {_number(e['other_score'])}"] for e in comparison["shown"]]


def markdown_lines(section: dict[str, Any] | None) -> list[str]:
    if not section or not section.get("comparisons"):
        return []
    lines = ["", f"## {TITLE}", "", section["method"], ""]
    lines += [f"- **⚠ regression**: {w}" for w in section["warnings"]] + ([""] if section["warnings"] else [])
    lines += markdown_table(HEADER, summary_rows(section))
    for c in section["comparisons"]:
        if not c["shown"]:
            continue
        lines += ["", f"### {c['system']} vs {c['other']} on {c['metric']}: lost {c['lost']}, won {c['won']}, "
                      f"tied {c['tied']}", ""]
        lines += markdown_table(EXAMPLE_HEADER, [[_md(cell) for cell in row] for row in example_rows(c)])
        lines += _more(c)
    return lines


def html_section(section: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The (title, content) section for reports/html.page, or none when the report has no pairs."""
    if not section or not section.get("comparisons"):
        return []
    content = html.paragraph(section["method"])
    content += "".join(f'<p style="color:#c53030;font-weight:600">⚠ regression: {html.escape(w)}</p>'
                       for w in section["warnings"])
    content += html.table(HEADER, summary_rows(section))
    for c in section["comparisons"]:
        if c["shown"]:
            content += (f"<h3>{html.escape(c['system'])} vs {html.escape(c['other'])} on "
                        f"{html.escape(c['metric'])}: lost {c['lost']}, won {c['won']}, tied {c['tied']}</h3>")
            content += html.table(EXAMPLE_HEADER, example_rows(c)) + "".join(html.paragraph(m) for m in _more(c))
    return [(TITLE, content)]


def terminal_lines(section: dict[str, Any] | None) -> list[str]:
    """What the CLI prints: one line per pair, then the warnings (``warning:``-prefixed)."""
    if not section:
        return []
    lines = [f"{c['system']} vs {c['other']} ({c['metric']}): won {c['won']}, lost {c['lost']}, tied {c['tied']}; "
             f"{describe_test(c)}" for c in section["comparisons"]]
    return lines + [f"warning: {w}" for w in section["warnings"]]


def _row(c: dict[str, Any], system: str, other: str) -> list[str]:
    interval = f" [{_number(c['ci_low'])}, {_number(c['ci_high'])}]" if "ci_low" in c else ""
    return [system, other, c["metric"], str(c["won"]), str(c["lost"]), str(c["tied"]),
            f"{c['mean_difference']:+.4g}{interval}", describe_test(c)]


def _more(c: dict[str, Any]) -> list[str]:
    hidden_lost = c["lost"] - sum(e["outcome"] == "lost" for e in c["shown"])
    hidden_won = c["won"] - sum(e["outcome"] == "won" for e in c["shown"])
    if not hidden_lost and not hidden_won:
        return []
    return ["", f"Not shown: {hidden_lost} more lost and {hidden_won} more won (their example numbers are in "
                "report.json, paired.comparisons[].lost_examples / won_examples)."]


def _where(e: dict[str, Any]) -> str:
    return f"#{e['example'] + 1}" + (f" (line {e['line']})" if e.get("line") else "")


def _number(value: float) -> str:
    return f"{value:.4g}"


def _clip(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _md(cell: str) -> str:
    return cell.replace("|", "\\|")
