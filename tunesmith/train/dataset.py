"""From a validated data file to tokenized training examples, and the batch collator."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.formats import Format, to_messages
from tunesmith.data.validate import ValidationReport
from tunesmith.train.tokenize import IGNORE, encode_chat


@dataclass
class EncodedSet:
    examples: list[dict[str, list[int]]] = field(default_factory=list)
    truncated: int = 0
    dropped_lines: list[int] = field(default_factory=list)  # nothing left to learn after truncation

    @property
    def input_tokens(self) -> int:
        return sum(len(e["input_ids"]) for e in self.examples)

    @property
    def loss_tokens(self) -> int:
        return sum(sum(1 for t in e["labels"] if t != IGNORE) for e in self.examples)


def encode_records(report: ValidationReport, tokenizer, max_length: int, indices: list[int] | None = None) -> EncodedSet:
    """Tokenize the valid records of a report (optionally only ``indices`` of them)."""
    out = EncodedSet()
    records = report.records if indices is None else [report.records[i] for i in indices]
    for record in records:
        encoded = encode_chat(tokenizer, to_messages(record.value, report.format), max_length)
        out.truncated += encoded.truncated
        if encoded.loss_tokens == 0:
            out.dropped_lines.append(record.line)
            continue
        out.examples.append({"input_ids": encoded.input_ids, "labels": encoded.labels})
    return out


class PadCollator:
    """Right-pads a batch: ``pad_id`` for inputs, ``IGNORE`` for labels, and an attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, Any]]):
        import torch

        width = max(len(e["input_ids"]) for e in batch)
        ids = [e["input_ids"] + [self.pad_id] * (width - len(e["input_ids"])) for e in batch]
        labels = [e["labels"] + [IGNORE] * (width - len(e["labels"])) for e in batch]
        mask = [[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in batch]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}
