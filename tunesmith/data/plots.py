"""PNG plots for dataset cards (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tunesmith.files import write_atomic
from tunesmith.reports import figure_png, new_figure


def histogram_png(values: Sequence[int], path: Path, title: str, xlabel: str) -> Path:
    fig = new_figure(7, 3.5, dpi=100)
    ax = fig.add_subplot()
    ax.hist(values, bins=min(50, max(5, len(set(values)))), color="#4C72B0")
    ax.set(title=title, xlabel=xlabel, ylabel="records")
    fig.tight_layout()
    return write_atomic(path, figure_png(fig))


def bars_png(counts: dict[str, int], path: Path, title: str, limit: int = 100) -> Path:
    items = list(counts.items())[:limit]
    fig = new_figure(7, max(2.5, 0.22 * len(items) + 1), dpi=100)
    ax = fig.add_subplot()
    ax.barh([k for k, _ in reversed(items)], [v for _, v in reversed(items)], color="#55A868")
    ax.set(title=title + (f" (top {limit})" if len(counts) > limit else ""), xlabel="records")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return write_atomic(path, figure_png(fig))
