"""Replay: general-purpose conversations mixed into fine-tuning data, a cure for forgetting.

Training only on one task pulls a model away from what it knew; mixing a small share of
general data back in ("rehearsal", as in the continual-learning literature) keeps part of it.
``replay.fraction`` is the share of the final training examples that are replayed; the records
are drawn with a fixed seed, and repeated in turn when the replay file is smaller than needed.
"""
from __future__ import annotations

import random

from tunesmith.config import ReplaySettings
from tunesmith.data.general import replay_path
from tunesmith.data.validate import validate_file
from tunesmith.errors import DataError
from tunesmith.training.dataset import EncodedSet, encode_records


def replay_count(train_examples: int, fraction: float) -> int:
    """How many replayed examples make them ``fraction`` of the total.

    >>> replay_count(90, 0.1)
    10
    """
    return max(1, round(train_examples * fraction / (1 - fraction)))


def replay_examples(settings: ReplaySettings, tokenizer, max_length: int, train_examples: int, seed: int,
                    train_on: str = "assistant") -> EncodedSet:
    """The encoded general examples to add to ``train_examples`` task examples."""
    path = replay_path(settings)
    report = validate_file(path, min_examples=1)
    if not report.ok:
        raise DataError(report.summary(), report)
    pool = encode_records(report, tokenizer, max_length, train_on=train_on).examples
    if not pool:
        raise DataError(f"{path}: no replay example left after truncation to {max_length} tokens")
    wanted = replay_count(train_examples, settings.fraction)
    rng = random.Random(seed)
    picked: list = []
    while len(picked) < wanted:  # whole shuffled passes, so every record is used before any repeats
        order = pool[:]
        rng.shuffle(order)
        picked += order[: wanted - len(picked)]
    return EncodedSet(picked)
