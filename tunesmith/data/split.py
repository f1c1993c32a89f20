"""Deterministic train/validation/test splits that do not leak.

Pure: records in, index lists out. The same records, ratios and seed always give the same split.
- ``groups`` (e.g. near-duplicate groups from tunesmith/data/dedup.py) are kept whole: every
  member of a group lands in the same split, so no edited copy of a test record is trained on.
- with ``stratify`` (a field, e.g. ``label``) each label is split on its own, so every split keeps
  the whole file's label shares as closely as the counts allow.
Groups are assigned one at a time, largest first, to the split furthest below its target.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict
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
    groups: Sequence[int] | None = None,
) -> list[list[int]]:
    """Indices of the records for each split, each list in original order.

    >>> split_indices([{}] * 10, (0.8, 0.1, 0.1), seed=0)
    [[0, 1, 2, 3, 4, 5, 6, 9], [8], [7]]
    """
    units: dict[int, list[int]] = defaultdict(list)  # group id → member indices
    for i in range(len(records)):
        units[groups[i] if groups is not None else i].append(i)
    by_label: dict[Any, list[list[int]]] = defaultdict(list)
    for members in units.values():
        by_label[str(records[members[0]].get(stratify)) if stratify else None].append(members)
    rng = random.Random(seed)
    splits: list[list[int]] = [[] for _ in ratios]
    for label in sorted(by_label, key=str):
        label_units = by_label[label]
        rng.shuffle(label_units)
        label_units.sort(key=len, reverse=True)  # stable: equal sizes keep their shuffled order
        _assign(label_units, ratios, splits)
    return [sorted(part) for part in splits]


def _assign(units: list[list[int]], ratios: Sequence[float], splits: list[list[int]]) -> None:
    """Give each unit to the split furthest below its target share, among those it fits (at least
    half the unit still within quota; else train). Ties go to the later split, so validation and
    test get their share of a small label before train takes the rest."""
    targets = [r * sum(len(u) for u in units) for r in ratios]
    quota = list(targets)
    for unit in units:
        fits = [s for s in range(len(ratios)) if quota[s] >= len(unit) / 2] or [0]
        chosen = max(fits, key=lambda s: (quota[s] / targets[s], s))
        splits[chosen].extend(unit)
        quota[chosen] -= len(unit)


def split_report(records: Sequence[dict[str, Any]], parts: list[list[int]], names: Sequence[str],
                 stratify: str | None) -> dict[str, Any]:
    """Counts per split and, with ``stratify``, each split's label shares against the whole file."""
    report: dict[str, Any] = {"records": {n: len(p) for n, p in zip(names, parts)}}
    if not stratify:
        return report
    whole = Counter(str(r.get(stratify)) for r in records)
    deviation = {}
    for name, part in zip(names, parts):
        counts = Counter(str(records[i].get(stratify)) for i in part)
        deviation[name] = max((abs(counts[label] / len(part) - n / len(records)) * 100 for label, n in whole.items()),
                              default=0.0) if part else None
    report["max_label_share_deviation_pp"] = deviation
    report["rare_labels"] = sorted(label for label, n in whole.items() if n < len(names))
    return report
