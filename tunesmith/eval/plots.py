"""Evaluation figures as PNG bytes (matplotlib, headless): written beside the report and
embedded in the HTML report as data URIs, so it reads offline."""
from __future__ import annotations

from typing import Any, Sequence

from tunesmith.reports import figure_png, new_figure


def confusion_heatmap(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> bytes:
    """Row-normalised (each true class sums to 1), so small and large classes read alike."""
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    side = min(max(5.0, 0.16 * n + 2), 22.0)
    figure = new_figure(side, side)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    font = 8 if n <= 30 else max(3.5, 8 - n / 15)
    axes.set_xticks(range(n), labels, rotation=90, fontsize=font)
    axes.set_yticks(range(n), labels, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    axes.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                              color="white" if shares[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.04, label="share of the true class")
    axes.set_title("confusion matrix (row-normalised)")
    return figure_png(figure)


def reliability_diagram(bins: Sequence[dict[str, Any]], ece: float) -> bytes:
    figure = new_figure(5, 5)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    filled = [b for b in bins if b["count"]]
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    axes.bar([b["low"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
             edgecolor="black", alpha=0.7, label="accuracy in bin")
    axes.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o", color="darkred",
              label="accuracy at the bin's mean confidence")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence of the predicted label")
    axes.set_ylabel("accuracy")
    axes.set_title(f"reliability (ECE {ece:.3f})")
    axes.legend(loc="upper left", fontsize=8)
    return figure_png(figure)


def system_bars(names: Sequence[str], values: Sequence[float], title: str) -> bytes:
    figure = new_figure(7, 0.45 * len(names) + 1.2)
    axes = figure.add_subplot()
    axes.barh(range(len(names)), values, color=["#2b6cb0" if i == 0 else "#a0aec0" for i in range(len(names))])
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    for i, value in enumerate(values):
        axes.text(min(value + 0.01, 0.9), i, f"{value:.1%}", va="center", fontsize=8)
    axes.set_title(title)
    return figure_png(figure)
