"""From a validated data file to tokenized training examples, and the batch collator."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.formats import to_messages
from tunesmith.data.validate import ValidationReport
from tunesmith.training.tokenize import IGNORE, encode_chat


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


class PadCollator:
    """Right-pads a batch: ``pad_id`` for inputs, ``IGNORE`` for labels, and an attention mask.

    With ``loss_positions_only`` the batch also says which positions carry loss
    (``logits_to_keep``, a boolean mask) and their targets (``shift_labels``), so the model
    projects onto the vocabulary only there. Assistant tokens are often a small share of a
    conversation (7 of ~110 tokens in the quickstart data), and the lm_head + cross-entropy over
    a 49k vocabulary at every position is pure waste: measured 30 % faster per step on
    SmolLM2-135M, same loss to 6 digits (transformers 5.23 slices hidden states by the mask and
    takes precomputed ``shift_labels``; the Trainer counts loss tokens from them).
    """

    def __init__(self, pad_id: int, loss_positions_only: bool = False):
        self.pad_id = pad_id
        self.loss_positions_only = loss_positions_only

    def __call__(self, batch: list[dict[str, Any]]):
        import torch

        width = max(len(e["input_ids"]) for e in batch)
        ids = [e["input_ids"] + [self.pad_id] * (width - len(e["input_ids"])) for e in batch]
        labels = [e["labels"] + [IGNORE] * (width - len(e["labels"])) for e in batch]
        mask = [[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in batch]
        out = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}
        if self.loss_positions_only:
            # Position t predicts token t+1: its target is labels[t + 1].
            shifted = torch.nn.functional.pad(out["labels"], (0, 1), value=IGNORE)[:, 1:]
            keep = shifted != IGNORE
            out["logits_to_keep"] = keep
            out["shift_labels"] = shifted[keep]
        return out


def supports_loss_positions(model) -> bool:
    """Whether the model's forward can compute logits at selected positions only."""
    import inspect

    if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        return False  # prompt/prefix tuning lengthens the sequence inside peft: positions would not line up
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters
