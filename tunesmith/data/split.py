"""Deterministic train/validation/test splits that do not leak.

Pure: records in, index lists out. The same records, ratios and seed always give the same split.
- ``groups`` (e.g. near-duplicate groups from tunesmith/data/dedup.py) are kept whole: every
  member of a group lands in the same split, so no edited copy of a test record is trained on.
- with ``stratify`` (a field, e.g. ``label``) each label is split on its own, so every split keeps
  the whole file's label shares as closely as the counts allow.
Both at once: groups are assigned one at a time, largest first, to the split furthest below
its targets (in records) for the group's labels among those where every one of its labels stays within
``tolerance`` of its expected count (±20 %, ±1 below 5 expected). Where a group is too large
for that (a label whose paraphrases form one big group), the split report names the label.
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
    max_group_share: float | None = None,
) -> list[list[int]]:
    """Indices of the records for each split, each list in original order. ``max_group_share``
    (0-1): a group holding more than that share of its main label's records is cut into pieces
    no larger, so the label can be stratified; the pieces may land in different splits (a leak
    the caller reports).

    >>> split_indices([{}] * 10, (0.8, 0.1, 0.1), seed=0)
    [[1, 2, 3, 4, 5, 6, 7, 8], [9], [0]]
    """
    units: dict[int, list[int]] = defaultdict(list)  # group id → member indices
    for i in range(len(records)):
        units[groups[i] if groups is not None else i].append(i)
    label_of = [str(r.get(stratify)) if stratify else "" for r in records]
    whole = Counter(label_of)
    targets = [{label: ratio * n for label, n in whole.items()} for ratio in ratios]
    counts: list[Counter] = [Counter() for _ in ratios]
    order = list(units.values())
    rng = random.Random(seed)
    rng.shuffle(order)
    if max_group_share is not None:
        order = [piece for members in order for piece in cut_group(members, label_of, whole, max_group_share, rng)]
    order.sort(key=len, reverse=True)  # stable: equal sizes keep their shuffled order
    splits: list[list[int]] = [[] for _ in ratios]
    for members in order:
        unit = Counter(label_of[i] for i in members)
        chosen = _best_split(unit, targets, counts)
        splits[chosen].extend(members)
        counts[chosen].update(unit)
    return [sorted(part) for part in splits]


def cut_group(members: list[int], label_of: list[str], whole: Counter, max_share: float,
              rng: random.Random) -> list[list[int]]:
    """``members`` whole, or in shuffled pieces of at most ``max_share`` of its main label's records.

    >>> cut_group([0, 1, 2, 3, 4], ["a"] * 10, Counter(a=10), 0.2, random.Random(0))
    [[2, 1], [0, 4], [3]]
    """
    label = Counter(label_of[i] for i in members).most_common(1)[0][0]
    cap = max(1, int(max_share * whole[label]))
    if len(members) <= cap:
        return [members]
    shuffled = members[:]
    rng.shuffle(shuffled)
    return [shuffled[i:i + cap] for i in range(0, len(shuffled), cap)]


def tolerance(expected: float) -> float:
    """How far a label's count in a split may stray from its expected count: ±20 %, or ±1 where
    fewer than 5 are expected.

    >>> tolerance(10), tolerance(100), tolerance(2)
    (2.0, 20.0, 1.0)
    """
    return 1.0 if expected < 5 else 0.2 * expected


def _best_split(unit: Counter, targets: list[dict[str, float]], counts: list[Counter]) -> int:
    """The split for one unit (a near-duplicate group, or one record): among the splits where
    each of its labels stays within tolerance of its expected count, the one furthest below its
    targets for those labels (in records, weighted by the unit's members: large groups go to the
    large split first, and each label's counts end at its targets rounded); ties go to the later
    split.
    A unit that fits nowhere goes where it overshoots least — train, for a group too large for
    the others."""
    def overshoot(s: int) -> float:
        return sum(max(0.0, counts[s][label] + n - targets[s][label] - tolerance(targets[s][label]))
                   for label, n in unit.items())

    def deficit(s: int) -> float:
        return sum(n * (targets[s][label] - counts[s][label]) for label, n in unit.items())

    fits = [s for s in range(len(targets)) if overshoot(s) == 0]
    if fits:
        return max(fits, key=lambda s: (deficit(s), s))
    return min(range(len(targets)), key=lambda s: (overshoot(s), s))


def split_report(records: Sequence[dict[str, Any]], parts: list[list[int]], names: Sequence[str],
                 stratify: str | None, ratios: Sequence[float] | None = None) -> dict[str, Any]:
    """Counts per split and, with ``stratify``, each split's label shares against the whole file,
    its worst label (relative to the count expected from ``ratios``, default the split's share)
    and every label outside ``tolerance``."""
    report: dict[str, Any] = {"records": {n: len(p) for n, p in zip(names, parts)}}
    if not stratify:
        return report
    whole = Counter(str(r.get(stratify)) for r in records)
    shares = list(ratios) if ratios else [len(p) / len(records) for p in parts] if records else []
    deviation, worst, off = {}, {}, {}
    for name, part, share in zip(names, parts, shares):
        counts = Counter(str(records[i].get(stratify)) for i in part)
        deviation[name] = max((abs(counts[label] / len(part) - n / len(records)) * 100 for label, n in whole.items()),
                              default=0.0) if part else None
        expected = {label: share * n for label, n in whole.items()}
        relative = {label: abs(counts[label] - e) / max(e, 1e-9) for label, e in expected.items()}
        if relative:
            label = max(relative, key=relative.__getitem__)
            worst[name] = {"label": label, "count": counts[label], "expected": round(expected[label], 2),
                           "relative": round(relative[label], 4)}
        outside = {label: {"count": counts[label], "expected": round(e, 2)} for label, e in expected.items()
                   if abs(counts[label] - e) > tolerance(e) + 1e-9}
        if outside:
            off[name] = outside
    report |= {"max_label_share_deviation_pp": deviation, "worst_label_deviation": worst, "labels_off": off}
    report["rare_labels"] = sorted(label for label, n in whole.items() if n < len(names))
    return report
