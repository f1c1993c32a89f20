"""Monitoring figures as PNG bytes (matplotlib, headless), embedded in report.html."""
from __future__ import annotations

from typing import Sequence

from tunesmith.monitoring.drift import words
from tunesmith.reports import figure_png, new_figure


def lengths(reference: Sequence[str], live: Sequence[str]) -> bytes:
    figure = new_figure(6, 3.2)
    axes = figure.add_subplot()
    ref, now = [len(words(t)) for t in reference], [len(words(t)) for t in live]
    top = max(max(ref, default=1), max(now, default=1))
    bins = list(range(0, top + 2, max(1, (top + 1) // 40)))
    axes.hist(ref, bins=bins, density=True, alpha=0.5, label=f"training ({len(ref)})")
    axes.hist(now, bins=bins, density=True, alpha=0.5, label=f"live ({len(now)})")
    axes.set_xlabel("words per input")
    axes.set_ylabel("share")
    axes.legend()
    return figure_png(figure)


def latency(latencies_ms: Sequence[float]) -> bytes:
    figure = new_figure(6, 3.2)
    axes = figure.add_subplot()
    axes.hist(latencies_ms, bins=40, color="#2b6cb0")
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("requests")
    return figure_png(figure)


def labels(changes: list[dict]) -> bytes:
    figure = new_figure(6, 0.35 * len(changes) + 1.2)
    axes = figure.add_subplot()
    names = [c["label"] for c in changes][::-1]
    positions = range(len(names))
    axes.barh([p + 0.2 for p in positions], [c["training"] for c in changes][::-1], height=0.4, label="training")
    axes.barh([p - 0.2 for p in positions], [c["live"] for c in changes][::-1], height=0.4, label="live predictions")
    axes.set_yticks(list(positions), names, fontsize=8)
    axes.set_xlabel("share")
    axes.legend()
    return figure_png(figure)
