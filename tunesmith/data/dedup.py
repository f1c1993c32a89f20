"""Exact and near-duplicate detection that scales to millions of records in little memory.

Near-duplicates are found in two stages:
1. candidates: MinHash signatures of word bigrams, banded LSH (16 bands × 4 rows, a
   collision threshold near Jaccard 0.5). Written with numpy rather than datasketch: its
   pure-Python MinHash costs ~0.5 ms a record (8+ minutes per million before anything else), and
   per-band dicts of a million keys each would not fit the 2 GB budget. Here a signature is one
   vectorised expression, and each band is grouped by sorting one uint64 array.
2. verification of each candidate pair on the texts themselves: after folding case,
   punctuation and whitespace, the word sequences differ by at most one edit (insert, delete or
   substitute one word), or their character 5-gram Jaccard similarity is at least 0.8.

So case, whitespace and punctuation changes and one-word edits are near-duplicates, and two
unrelated texts (even ones sharing a template) are not.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from typing import Callable

import numpy as np

NUM_PERM, BANDS = 64, 16
ROWS = NUM_PERM // BANDS
MAX_BUCKET = 32
_FOLD = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def fold(text: str) -> str:
    """Case, punctuation and whitespace folded away.

    >>> fold("  Hello,   World!! ")
    'hello world'
    """
    return _SPACE.sub(" ", _FOLD.sub(" ", unicodedata.normalize("NFKC", text).lower())).strip()


def exact_key(text: str) -> bytes:
    """An 8-byte fingerprint of (normalised) content, for exact duplicates."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


class MinHasher:
    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 1 << 32, NUM_PERM, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
        self.b = rng.integers(0, 1 << 32, NUM_PERM, dtype=np.uint64).astype(np.uint32)

    def signature(self, folded: str) -> np.ndarray:
        """uint32[NUM_PERM] MinHash of the text's word bigrams (the word itself for one-word texts).

        Word bigrams, not character n-grams: unrelated texts share few of them (character
        4-grams such as " the" or "ing " are in almost every text and flood LSH with false
        candidates), while a one-word edit in a ten-word text still keeps Jaccard ~0.64.
        Hashing is vectorised: x*a + b mod 2^32 (odd a) over a mixed bigram hash.
        """
        words = np.fromiter((zlib.crc32(w.encode()) for w in folded.split() or [""]), dtype=np.uint32)
        x = words[:-1] * np.uint32(0x9E3779B1) + words[1:] if len(words) > 1 else words
        x = np.unique(x)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x2C1B3C6D)
        x ^= x >> np.uint32(12)
        return (np.multiply.outer(x, self.a) + self.b).min(axis=0)


def candidate_pairs(signatures: np.ndarray) -> set[tuple[int, int]]:
    """Index pairs (i < j) that share at least one LSH band."""
    pairs: set[tuple[int, int]] = set()
    for band in range(BANDS):
        rows = signatures[:, band * ROWS:(band + 1) * ROWS].astype(np.uint64)  # one band at a time: small
        key = np.zeros(len(signatures), dtype=np.uint64)
        for col in range(ROWS):  # a multiplicative hash of the band's rows
            key = (key ^ rows[:, col]) * np.uint64(0x9E3779B97F4A7C15)
        order = np.argsort(key, kind="stable")
        ordered = key[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        ends = np.r_[starts[1:], len(ordered)]
        for start, end in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
            members = [int(m) for m in np.sort(order[start:end])]
            if len(members) <= MAX_BUCKET:
                pairs.update((a, b) for k, a in enumerate(members) for b in members[k + 1:])
            else:  # a crowded band (a shared boilerplate shingle): link neighbours, not all pairs
                first = members[0]
                for prev, member in zip(members[:-1], members[1:]):
                    pairs.add((first, member))
                    pairs.add((prev, member))
    return pairs


def is_near_duplicate(a: str, b: str) -> bool:
    """Texts already folded: at most one word edited, or char 5-gram Jaccard >= 0.8.

    >>> is_near_duplicate("how do i reset my pin", "how do i change my pin")
    True
    >>> is_near_duplicate("how do i reset my pin", "where is my new card")
    False
    """
    if a == b:
        return True
    wa, wb = a.split(), b.split()
    if min(len(wa), len(wb)) >= 4 and _within_one_edit(wa, wb):
        return True
    return _jaccard(_grams(a, 5), _grams(b, 5)) >= 0.8


def _within_one_edit(a: list[str], b: list[str]) -> bool:
    if abs(len(a) - len(b)) > 1:
        return False
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    # Skip the one differing word on either side (substitution, insertion or deletion).
    return a[i + 1:] == b[i + 1:] or a[i:] == b[i + 1:] or a[i + 1:] == b[i:]


def _grams(text: str, n: int) -> set[str]:
    return {text[i:i + n] for i in range(max(1, len(text) - n + 1))}


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class UnionFind:
    """Groups of near-duplicates; the root of a group is its earliest record."""

    def __init__(self, size: int):
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def near_duplicate_groups(signatures: np.ndarray, folded: Callable[[int], str]) -> list[int]:
    """For each record, the earliest record of its connected group of near-duplicates.

    Transitive on purpose: for splitting, a chain of edits (A~B~C) must stay in one split.
    """
    groups = UnionFind(len(signatures))
    texts = _TextCache(folded)
    for i, j in sorted(candidate_pairs(signatures)):
        if groups.find(i) != groups.find(j) and is_near_duplicate(texts[i], texts[j]):
            groups.union(i, j)
    return [groups.find(i) for i in range(len(signatures))]


def duplicates_of_kept(signatures: np.ndarray, folded: Callable[[int], str],
                       compatible: Callable[[int, int], bool] | None = None,
                       rule: Callable[[str, str], bool] | None = None) -> dict[int, int]:
    """Record → the earlier *kept* record it near-duplicates, for every record to remove.

    Not transitive, for cleaning: a record goes only when it is itself close to one that stays,
    and ``compatible`` can forbid a match (e.g. different labels: "my card is broken" and "my
    card is stolen" are one word apart and mean different things). ``rule`` decides on two folded
    texts (default ``is_near_duplicate``; ``str.__eq__`` for cosmetic changes only).
    """
    rule = rule or is_near_duplicate
    earlier: dict[int, list[int]] = {}
    for i, j in candidate_pairs(signatures):
        earlier.setdefault(j, []).append(i)
    texts = _TextCache(folded)
    removed: dict[int, int] = {}
    for j in sorted(earlier):
        for i in sorted(earlier[j]):
            if i not in removed and (compatible is None or compatible(i, j)) and rule(texts[i], texts[j]):
                removed[j] = i
                break
    return removed


class _TextCache(dict):
    """Folded texts fetched on demand (from a spool file), the most recent 100,000 kept."""

    def __init__(self, fetch: Callable[[int], str]):
        super().__init__()
        self.fetch = fetch

    def __missing__(self, index: int) -> str:
        if len(self) >= 100_000:
            self.clear()
        self[index] = text = self.fetch(index)
        return text
