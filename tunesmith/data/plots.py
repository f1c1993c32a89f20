"""PNG plots for dataset cards (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def histogram_png(values: Sequence[int], path: Path, title: str, xlabel: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    ax.hist(values, bins=min(50, max(5, len(set(values)))), color="#4C72B0")
    ax.set(title=title, xlabel=xlabel, ylabel="records")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def bars_png(counts: dict[str, int], path: Path, title: str, limit: int = 100) -> Path:
    plt = _pyplot()
    items = list(counts.items())[:limit]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(items) + 1)), dpi=100)
    ax.barh([k for k, _ in reversed(items)], [v for _, v in reversed(items)], color="#55A868")
    ax.set(title=title + (f" (top {limit})" if len(counts) > limit else ""), xlabel="records")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
