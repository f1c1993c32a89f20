"""The dataset card printed by ``tunesmith data check``: what is in a valid file, in numbers.

Pure: token lengths are computed by the caller (they need the model's tokenizer and chat
template) and passed in.
"""
from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from tunesmith.data.pii import find_pii


@dataclass
class LengthStats:
    min: int
    median: float
    p95: int
    max: int

    @classmethod
    def of(cls, lengths: Sequence[int]) -> "LengthStats":
        ordered = sorted(lengths)
        p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
        return cls(ordered[0], statistics.median(ordered), p95, ordered[-1])


@dataclass
class DatasetCard:
    path: str
    format: str
    records: int
    model: str | None = None
    lengths: LengthStats | None = None
    max_length: int | None = None
    over_max_length: int | None = None
    tokens_per_epoch: int | None = None
    loss_tokens_per_epoch: int | None = None
    labels: dict[str, int] = field(default_factory=dict)
    estimated_seconds_per_epoch: float | None = None
    length_histogram: list[dict[str, int]] = field(default_factory=list)
    personal_data: dict[str, int] = field(default_factory=dict)  # records with each kind of personal data
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_distribution(records: Sequence[dict[str, Any]], key: str = "label") -> dict[str, int]:
    """Label counts, most common first.

    >>> label_distribution([{"label": "a"}, {"label": "b"}, {"label": "a"}])
    {'a': 2, 'b': 1}
    """
    counts = Counter(str(r[key]) for r in records if key in r)
    return dict(counts.most_common())


def token_summary(lengths: Sequence[int], max_length: int) -> tuple[LengthStats, int, int]:
    """Length statistics, how many exceed ``max_length``, and the tokens one epoch trains on."""
    return LengthStats.of(lengths), sum(n > max_length for n in lengths), sum(min(n, max_length) for n in lengths)


def length_histogram(lengths: Sequence[int], bins: int = 12) -> list[dict[str, int]]:
    """Counts of lengths in equal-width bins from the shortest to the longest (at most ``bins``).

    >>> length_histogram([1, 2, 2, 9], bins=2)
    [{'low': 1, 'high': 5, 'count': 3}, {'low': 5, 'high': 9, 'count': 1}]
    """
    if not lengths:
        return []
    low, high = min(lengths), max(lengths)
    width = max(1, -(-(high - low) // bins))  # ceiling division: every length falls in a bin
    counts = Counter(min((n - low) // width, bins - 1) for n in lengths)
    return [{"low": low + i * width, "high": min(low + (i + 1) * width, high), "count": counts.get(i, 0)}
            for i in range(max(counts) + 1)]


def personal_data_counts(records: Sequence[Any]) -> dict[str, int]:
    """How many records hold each kind of personal data (any string inside them).

    >>> personal_data_counts([{"text": "mail jo@example.com"}, {"text": "no"}, ["a@b.io", "c@d.io"]])
    {'email': 2}
    """
    counts: Counter = Counter()
    for record in records:
        kinds = {kind for text in _strings(record) for _, _, kind in find_pii(text)}
        counts.update(kinds)
    return dict(counts.most_common())


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
