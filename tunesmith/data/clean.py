"""``tunesmith data clean``: normalise, set aside invalid records, deduplicate, scrub personal
data, filter by length and quality — and never lose a record.

Streaming, in two passes so memory stays flat however large the file:
1. every line is read once: normalised, validated, scrubbed, filtered and checked against the
   exact-duplicate fingerprints; survivors are spooled to a temporary file, and only an 8-byte
   fingerprint and a 64-value MinHash signature per record stay in memory;
2. near-duplicate groups and label conflicts are resolved over those arrays, then the spool is
   read back and each record goes to the output or to the rejects file.

Every removed or changed record is written to ``<out>.rejects.jsonl`` with its original line,
the step and the reason; input records = kept + removed, and the summary says so.
"""
from __future__ import annotations

import csv
import json
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, TextIO

import numpy as np

from tunesmith.config import CleanConfig
from tunesmith.data.dedup import NUM_PERM, MinHasher, duplicates_of_kept, exact_key, fold, is_near_duplicate
from tunesmith.data.formats import Format
from tunesmith.data.io import read_rows
from tunesmith.data.normalize import ROLE_ALIASES, dedup_text, fix_roles, map_texts, normalize_text, text_slots
from tunesmith.data.pii import find_pii, redact
from tunesmith.data.validate import detect_file_format, validate_record

STEPS = ("invalid", "quality", "length", "personal_data", "exact_duplicate", "near_duplicate", "label_conflict")


@dataclass
class CleanSummary:
    input_records: int = 0
    kept: int = 0
    removed: int = 0
    modified: int = 0
    removed_by_step: Counter = field(default_factory=Counter)
    removed_by_reason: Counter = field(default_factory=Counter)
    personal_data: Counter = field(default_factory=Counter)
    format: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.input_records == self.kept + self.removed

    def to_dict(self) -> dict[str, Any]:
        return {"input_records": self.input_records, "kept": self.kept, "removed": self.removed,
                "modified": self.modified, "balanced": self.balanced, "format": self.format,
                "removed_by_step": dict(self.removed_by_step), "removed_by_reason": dict(self.removed_by_reason),
                "personal_data": dict(self.personal_data), "outputs": self.outputs}


class _Rejects:
    """The rejects file: one JSON object per removed or changed record."""

    def __init__(self, handle: TextIO, summary: CleanSummary):
        self.handle, self.summary = handle, summary

    def removed(self, line: int, step: str, reason: str, record: Any, **extra: Any) -> None:
        self.summary.removed += 1
        self.summary.removed_by_step[step] += 1
        self.summary.removed_by_reason[f"{step}: {reason.split(':')[0]}"] += 1
        self._write({"line": line, "action": "removed", "step": step, "reason": reason, **extra, "record": record})

    def modified(self, line: int, changes: list[tuple[str, str]], original: Any) -> None:
        """``changes``: (step, what was done) pairs; ``original`` is the record as it was read."""
        self.summary.modified += 1
        self._write({"line": line, "action": "modified", "step": ",".join(step for step, _ in changes),
                     "reason": "; ".join(reason for _, reason in changes), "record": original})

    def _write(self, entry: dict) -> None:
        self.handle.write(json.dumps(entry, ensure_ascii=False) + "\n")


def clean_file(source: str | Path, out: str | Path, options: CleanConfig | None = None,
               count_tokens: Callable[[str], int] | None = None,
               progress: Callable[[int], None] | None = None) -> CleanSummary:
    """Clean ``source`` into ``out``; ``count_tokens`` measures length (default: words)."""
    options = options or CleanConfig()
    source, out = Path(source), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = Format(options.format) if options.format else detect_file_format(_peek(source), source)
    summary = CleanSummary(format=fmt.value if fmt else None)
    rejects_path = out.with_name(out.name + ".rejects.jsonl") if out.suffix != ".jsonl" else out.with_suffix(".rejects.jsonl")
    with open(rejects_path, "w", encoding="utf-8") as rejects_file, \
            tempfile.TemporaryFile("w+b", dir=out.parent) as spool:
        rejects = _Rejects(rejects_file, summary)
        state = _first_pass(source, fmt, options, count_tokens, rejects, spool, summary, progress)
        drop = _resolve_groups(state, spool, fmt, options)
        _second_pass(spool, state, drop, out, rejects, summary)
    summary.outputs = {"output": str(out), "rejects": str(rejects_path)}
    return summary


def _peek(path: Path, limit: int = 200):
    rows = []
    for row in read_rows(path):
        rows.append(row)
        if len(rows) >= limit:
            break
    return rows


class SignatureStore:
    """MinHash signatures in one growing uint32 array (a list of small arrays costs 1.5x more)."""

    def __init__(self, capacity: int = 65536):
        self.data = np.empty((capacity, NUM_PERM), dtype=np.uint32)
        self.size = 0

    def append(self, signature: np.ndarray) -> None:
        if self.size == len(self.data):
            self.data = np.concatenate([self.data, np.empty_like(self.data)])
        self.data[self.size] = signature
        self.size += 1

    def __len__(self) -> int:
        return self.size

    def array(self) -> np.ndarray:
        return self.data[:self.size]


@dataclass
class _State:
    lines: list[int] = field(default_factory=list)        # original line of each spooled record
    offsets: list[int] = field(default_factory=list)      # where it starts in the spool
    spooled_bytes: int = 0
    signatures: "SignatureStore" = field(default_factory=lambda: SignatureStore())
    conflict_keys: dict[bytes, set] = field(default_factory=dict)
    text_keys: list[bytes] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)      # classification: near-duplicates must agree


def _first_pass(source: Path, fmt: Format | None, options: CleanConfig, count_tokens, rejects: _Rejects, spool: BinaryIO,
                summary: CleanSummary, progress) -> _State:
    state = _State()
    seen: dict[bytes, int] = {}
    hasher = MinHasher()
    for row in read_rows(source):
        summary.input_records += 1
        if progress and summary.input_records % 10000 == 0:
            progress(summary.input_records)
        if row.error:
            rejects.removed(row.line, "invalid", f"{row.error[0]}: {row.error[1]}", row.raw)
            continue
        original = json.dumps(row.value, ensure_ascii=False)
        record = row.value
        outcome = _clean_record(record, fmt, options, count_tokens, row.line, rejects, summary)
        if outcome is None:
            continue
        changes = outcome
        content = dedup_text(record, fmt)
        key = exact_key(content + ("\x00" + str(record.get("label")) if fmt is Format.CLASSIFICATION else ""))
        if options.dedup_exact and key in seen:
            rejects.removed(row.line, "exact_duplicate", "same content as an earlier record", record,
                            duplicate_of=seen[key])
            continue
        seen[key] = row.line
        if changes:
            rejects.modified(row.line, changes, json.loads(original))
        state.lines.append(row.line)
        # Offsets are counted, not asked for: tell() on a file being written flushes every time.
        encoded = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        state.offsets.append(state.spooled_bytes)
        state.spooled_bytes += len(encoded)
        spool.write(encoded)
        if options.dedup_near:
            state.signatures.append(hasher.signature(fold(content)))
        if fmt is Format.CLASSIFICATION and options.label_conflicts:
            text_key = exact_key(fold(content))
            state.text_keys.append(text_key)
            state.conflict_keys.setdefault(text_key, set()).add(str(record["label"]))
        if fmt is Format.CLASSIFICATION:
            state.labels.append(str(record["label"]))
    return state


def _clean_record(record: Any, fmt: Format | None, options: CleanConfig, count_tokens, line: int, rejects: _Rejects,
                  summary: CleanSummary) -> list[str] | None:
    """Normalise, validate, scrub and filter one record in place: the (step, change) pairs made, or
    None when the record was removed."""
    if fmt is None:
        rejects.removed(line, "invalid", "unknown_format: cannot tell the data format", record)
        return None
    changes = []
    if isinstance(record, dict):
        if map_texts(record, fmt, normalize_text):
            changes.append(("normalise", "Unicode NFC, line endings, surrounding whitespace"))
        if fmt is Format.CHAT and options.fix_roles and (mapped := fix_roles(record)):
            changes.append(("fix_roles", "roles " + ", ".join(mapped)))
    problems = validate_record(record, fmt, line)
    if problems:
        reason = "; ".join(f"{p.field + ': ' if p.field else ''}{p.message}" for p in problems)
        if any(p.code == "unknown_role" for p in problems) and _has_alias(record):
            reason += " (a known alias: map it with --fix-roles)"
        rejects.removed(line, "invalid", f"{problems[0].code}: {reason}", record)
        return None
    if (quality := _quality_problem(record, fmt, options)):
        rejects.removed(line, "quality", quality, record)
        return None
    if (length := _length_problem(record, fmt, options, count_tokens)):
        rejects.removed(line, "length", length, record)
        return None
    if options.pii != "off":
        found = Counter(kind for c, k, _ in text_slots(record, fmt) for _, _, kind in find_pii(c[k]))
        summary.personal_data.update(found)
        if found and options.pii == "drop":
            rejects.removed(line, "personal_data", "contains " + ", ".join(sorted(found)), record)
            return None
        if found and options.pii == "redact":
            map_texts(record, fmt, lambda text: redact(text)[0])
            changes.append(("personal_data", "redacted " + ", ".join(f"{n} {kind}" for kind, n in sorted(found.items()))))
    return changes


def _has_alias(record: Any) -> bool:
    return any(isinstance(m, dict) and str(m.get("role", "")).lower() in ROLE_ALIASES
               for m in record.get("messages") or [])


_NON_TEXT = re.compile(r"[^\w\s]|_")


def _quality_problem(record: dict, fmt: Format, options: CleanConfig) -> str | None:
    run = re.compile(r"(\S)\1{%d,}" % options.max_char_run)  # a character repeated too often (regex: C speed)
    for container, key, _ in text_slots(record, fmt):
        text = container[key]
        if (match := run.search(text)):
            return f"repeated_characters: {match.group(1)!r} repeated {len(match.group(0))} times in {key}"
        useful = len(text) - len(_NON_TEXT.findall(text))
        if text and useful / len(text) < options.min_text_ratio:
            return f"mostly_non_text: only {useful / len(text):.0%} letters, digits and spaces in {key}"
    return None


def _length_problem(record: dict, fmt: Format, options: CleanConfig, count_tokens) -> str | None:
    text = "\n".join(c[k] for c, k, _ in text_slots(record, fmt))
    if options.max_chars and len(text) > options.max_chars:
        return f"too_long: {len(text):,} characters, more than {options.max_chars:,}"
    tokens = count_tokens(text) if count_tokens else len(text.split())
    shortest = options.shortest(fmt is Format.CLASSIFICATION)
    if tokens < shortest:
        return f"too_short: {tokens} tokens, fewer than {shortest}"
    if options.max_tokens and tokens > options.max_tokens:
        return f"too_long: {tokens} tokens, more than {options.max_tokens}"
    return None


def _resolve_groups(state: _State, spool: BinaryIO, fmt: Format | None, options: CleanConfig) -> dict[int, tuple]:
    """Spool index → (step, reason, extra) for records removed by near-duplicate or conflict checks."""
    drop: dict[int, tuple] = {}
    # Conflicts first: both sides of a conflict are set aside, whatever else they duplicate.
    for index, text_key in enumerate(state.text_keys):
        labels = state.conflict_keys[text_key]
        if len(labels) > 1:
            drop[index] = ("label_conflict", f"the same text has conflicting labels: {', '.join(sorted(labels))}", {})
    if options.dedup_near and len(state.signatures) > 1:
        same_label = (lambda i, j: state.labels[i] == state.labels[j]) if state.labels else None
        rule = is_near_duplicate if options.near_edits(fmt is Format.CLASSIFICATION) else str.__eq__
        found = duplicates_of_kept(state.signatures.array(), lambda i: _folded_at(spool, state.offsets[i], fmt),
                                   same_label, rule)
        for index, kept in found.items():
            if index not in drop:
                drop[index] = ("near_duplicate", "near-duplicate of an earlier record",
                               {"duplicate_of": state.lines[kept]})
    return drop


def _folded_at(spool: BinaryIO, offset: int, fmt: Format) -> str:
    spool.seek(offset)
    return fold(dedup_text(json.loads(spool.readline()), fmt))


def _second_pass(spool: BinaryIO, state: _State, drop: dict[int, tuple], out: Path, rejects: _Rejects,
                 summary: CleanSummary) -> None:
    spool.seek(0)
    as_csv = out.suffix.lower() == ".csv"
    with open(out, "w", encoding="utf-8", newline="" if as_csv else None) as output:
        writer = csv.DictWriter(output, fieldnames=["text", "label"], extrasaction="ignore") if as_csv else None
        if writer:
            writer.writeheader()
        for index, text in enumerate(spool):
            if index in drop:
                step, reason, extra = drop[index]
                rejects.removed(state.lines[index], step, reason, json.loads(text), **extra)
                continue
            if writer:
                writer.writerow(json.loads(text))
            else:
                output.write(text.decode("utf-8"))
            summary.kept += 1

