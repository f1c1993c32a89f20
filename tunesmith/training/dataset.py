"""From a validated data file to tokenized training examples (the collator: models/collate.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

from tunesmith.data.formats import to_messages
from tunesmith.data.validate import ValidationReport
from tunesmith.models.chat import IGNORE, encode_chat


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


def encode_records(report: ValidationReport, tokenizer, max_length: int, indices: list[int] | None = None,
                   train_on: str = "assistant") -> EncodedSet:
    """Tokenize the valid records of a report (optionally only ``indices`` of them)."""
    out = EncodedSet()
    records = report.records if indices is None else [report.records[i] for i in indices]
    for record in records:
        encoded = encode_chat(tokenizer, to_messages(record.value, report.format), max_length, train_on)
        out.truncated += encoded.truncated
        if encoded.loss_tokens == 0:
            out.dropped_lines.append(record.line)
            continue
        out.examples.append({"input_ids": encoded.input_ids, "labels": encoded.labels})
    return out
