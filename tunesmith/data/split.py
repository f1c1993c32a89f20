"""Deterministic train/validation/test splits.

Pure: records in, index lists out. The same records, ratios and seed always give the same split.
With ``stratify`` (a field name, e.g. ``label``), each label is split on its own so every split
keeps the whole file's label shares as closely as the counts allow.
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Any, Sequence

SPLIT_NAMES = ("train", "validation", "test")


def parse_ratios(text: str) -> tuple[float, ...]:
    """'0.8,0.1,0.1' → (0.8, 0.1, 0.1); ratios must be positive and sum to 1.

    >>> parse_ratios("0.8,0.1,0.1")
    (0.8, 0.1, 0.1)
    """
    try:
        ratios = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"ratios must be comma-separated numbers, got {text!r}") from None
    if not 2 <= len(ratios) <= 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"give 2 or 3 positive ratios that sum to 1, got {text!r}")
    return ratios


def split_indices(
    records: Sequence[dict[str, Any]],
    ratios: Sequence[float],
    seed: int = 0,
    stratify: str | None = None,
) -> list[list[int]]:
    """Indices of the records for each split, each list in original order.

    >>> split_indices([{}] * 10, (0.8, 0.1, 0.1), seed=0)[1:]
    [[9], [6]]
    """
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[record.get(stratify) if stratify else None].append(i)
    rng = random.Random(seed)
    splits: list[list[int]] = [[] for _ in ratios]
    for key in sorted(groups, key=str):
        members = groups[key]
        rng.shuffle(members)
        for part, chunk in zip(splits, _cut(members, ratios)):
            part.extend(chunk)
    return [sorted(part) for part in splits]


def _cut(items: list[int], ratios: Sequence[float]) -> list[list[int]]:
    """Cut a shuffled list by ratios; the rounding remainder goes to the first (training) part."""
    sizes = [int(len(items) * r) for r in ratios]
    sizes[0] += len(items) - sum(sizes)
    out, start = [], 0
    for size in sizes:
        out.append(items[start:start + size])
        start += size
    return out
