"""Writing reports down, the one way every report in tunesmith is written: evaluation and
comparison tables, cleaning and split cards, search studies, monitoring.

    markdown_table(header, rows)       the lines of a Markdown table
    write_csv(path, header, rows)      a CSV file (rows as sequences, or mappings read by the header)
    new_figure(w, h) → figure_png     a matplotlib figure (Agg, headless) and its PNG bytes
    write_bundle(directory, stem, ...) one report's <stem>.json, <stem>.md and <stem>.html

Every file is written atomically (``files.write_atomic``): a reader — the web UI showing a
report while an evaluation rewrites it — sees the old file or the new one, never half of one.
JSON is indented, UTF-8 (not ``\\u`` escapes) and ends with a newline; a value JSON has no type
for (a path, a NumPy integer) is written as its text. Page layout lives in ``reports/html.py``.
"""
from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tunesmith.files import write_atomic


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The lines of a GitHub-flavoured Markdown table, each cell as its ``str``.

    >>> markdown_table(["metric", "value"], [["loss", "0.5"], ["steps", 3]])
    ['| metric | value |', '|---|---|', '| loss | 0.5 |', '| steps | 3 |']
    """
    return (["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> str:
    """CSV with a header line; a mapping row is read by the header's names (a missing key and
    ``None`` are both an empty cell, as ``csv`` writes them).

    >>> csv_text(["a", "b"], [[1, None], {"b": "x,y"}]).splitlines()
    ['a,b', '1,', ',"x,y"']
    """
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([row.get(key) for key in header] if isinstance(row, Mapping) else row for row in rows)
    return buffer.getvalue()


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> Path:
    return write_atomic(path, csv_text(header, rows))


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"


def write_bundle(directory: Path, stem: str, *, data: Any = None, markdown: str | None = None,
                 html: str | None = None) -> dict[str, str]:
    """Write the given forms of one report as ``<stem>.json`` (``data``), ``<stem>.md`` and
    ``<stem>.html`` (text, written as given) in ``directory``; returns their paths by kind
    (``json``, ``markdown``, ``html``)."""
    directory.mkdir(parents=True, exist_ok=True)
    forms = {"json": ("json", None if data is None else json_text(data)), "markdown": ("md", markdown),
             "html": ("html", html)}
    return {kind: str(write_atomic(directory / f"{stem}.{suffix}", text))
            for kind, (suffix, text) in forms.items() if text is not None}


@functools.cache
def pyplot():
    """``matplotlib.pyplot`` on the headless Agg backend, chosen once, on first use (servers
    and workers have no display; importing this module does not import matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_figure(width: float, height: float, dpi: int = 110):
    """A new figure ``width`` × ``height`` inches; pass it to ``figure_png`` when drawn."""
    return pyplot().figure(figsize=(width, height), dpi=dpi)


def figure_png(fig) -> bytes:
    """The figure as PNG bytes (at its own dpi, cropped to what is drawn); the figure is closed,
    so a long-lived process drawing many reports does not keep them all in memory."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        pyplot().close(fig)
    return buffer.getvalue()
