"""The dataset card printed by ``tunesmith data check``: what is in a valid file, in numbers.

Pure: token lengths are computed by the caller (they need the model's tokenizer and chat
template) and passed in.
"""
from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence


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
