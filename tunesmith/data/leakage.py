"""Overlap between two data files (e.g. train vs test): exact and near-duplicates across them.

A test example that also sits in the training data, verbatim or lightly edited, inflates every
metric computed on it. Uses the same definitions as cleaning (tunesmith/data/dedup.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.dedup import MinHasher, candidate_pairs, exact_key, fold, is_near_duplicate
from tunesmith.data.formats import Format
from tunesmith.data.normalize import dedup_text
from tunesmith.data.validate import validate_file


@dataclass
class Leakage:
    a: str
    b: str
    a_records: int
    b_records: int
    exact: int = 0
    near: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "a_records": self.a_records, "b_records": self.b_records,
                "exact_overlaps": self.exact, "near_overlaps": self.near, "examples": self.examples}


def folded_texts(path: str | Path) -> tuple[list[int], list[str], Format]:
    """(line numbers, folded content) of the valid records of a file."""
    report = validate_file(path, min_examples=1)
    texts = [fold(dedup_text(r.value, report.format)) for r in report.records]
    return [r.line for r in report.records], texts, report.format


def find_leakage(a: str | Path, b: str | Path, max_examples: int = 20) -> Leakage:
    a_lines, a_texts, _ = folded_texts(a)
    b_lines, b_texts, _ = folded_texts(b)
    return leakage_between(str(a), a_lines, a_texts, str(b), b_lines, b_texts, max_examples)


def leakage_between(a: str, a_lines: list[int], a_texts: list[str], b: str, b_lines: list[int], b_texts: list[str],
                    max_examples: int = 20, signatures: np.ndarray | None = None) -> Leakage:
    """Overlap of b's texts with a's. ``signatures``: MinHash rows of a's texts then b's, when the
    caller already has them (split does), so nothing is hashed twice."""
    result = Leakage(a, b, len(a_texts), len(b_texts))
    found: list[tuple[int, int, str]] = []
    by_key = {exact_key(t): i for i, t in enumerate(a_texts)}
    leaked_b: set[int] = set()
    for j, text in enumerate(b_texts):
        if (i := by_key.get(exact_key(text))) is not None:
            found.append((i, j, "exact"))
            leaked_b.add(j)
    if a_texts and b_texts:
        if signatures is None:
            hasher = MinHasher()
            signatures = np.stack([hasher.signature(t) for t in a_texts + b_texts])
        offset = len(a_texts)
        for i, j in sorted(candidate_pairs(signatures)):
            if i < offset <= j and (j - offset) not in leaked_b and is_near_duplicate(a_texts[i], b_texts[j - offset]):
                found.append((i, j - offset, "near"))
                leaked_b.add(j - offset)  # each record of b is counted once
    result.exact = sum(kind == "exact" for *_, kind in found)
    result.near = sum(kind == "near" for *_, kind in found)
    result.examples = [{"kind": kind, "a_line": a_lines[i], "b_line": b_lines[j], "a": a_texts[i][:160],
                        "b": b_texts[j][:160]} for i, j, kind in found[:max_examples]]
    return result
