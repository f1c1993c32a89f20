"""What a data file looks like to a model before training: the dataset card (records, labels,
personal data, token lengths under the model's tokenizer and chat template, tokens per epoch,
an estimate of the time per epoch) and the token counter that cleaning's limits use.

Tokens are counted as training counts them: conversations through the chat template (ChatML
where the model has none), preference pairs as the longer of prompt + chosen and prompt +
rejected, classification texts plain.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tunesmith.config import CleanConfig
from tunesmith.data.card import DatasetCard, label_distribution, length_histogram, personal_data_counts, token_summary
from tunesmith.data.clean import clean_file
from tunesmith.data.clean_report import write_card
from tunesmith.data.formats import SFT_FORMATS, Format, as_preference, to_messages
from tunesmith.data.validate import ValidationReport, validate_file
from tunesmith.errors import DataError, TunesmithError
from tunesmith.models.chat import encode_chat, ensure_chat_template
from tunesmith.models.hardware import estimate_train_seconds
from tunesmith.models.inspect import parameter_count
from tunesmith.models.loading import load_tokenizer
from tunesmith.models.store import resolve_model
from tunesmith.training.preference import as_conversations
from tunesmith.workspace import Workspace


def dataset_card(path: str | Path, model: str | None, max_length: int, fmt: str | None, min_examples: int,
                 method: str, workspace: Workspace) -> tuple[ValidationReport, DatasetCard | None]:
    """Validate a file; when it is valid, also build its dataset card (token lengths under ``model``)."""
    report = validate_file(path, fmt, min_examples=min_examples)
    if not report.ok:
        return report, None
    values = [r.value for r in report.records]
    card = DatasetCard(str(path), report.format.value, len(values), max_length=max_length,
                       personal_data=personal_data_counts(values))
    if report.format is Format.CLASSIFICATION:
        card.labels = label_distribution(values)
    if model:
        _add_token_stats(card, report, model, max_length, method, workspace)
    return report, card


def _add_token_stats(card: DatasetCard, report: ValidationReport, model: str, max_length: int, method: str,
                     workspace: Workspace) -> None:

    try:
        ref = resolve_model(model, workspace)
        tokenizer = load_tokenizer(ref)
    except (TunesmithError, OSError) as e:
        card.notes.append(f"token statistics skipped: {e}")
        return
    card.model = ref.name
    if ensure_chat_template(tokenizer):
        card.notes.append(f"{ref.name} has no chat template; lengths use ChatML, as training would")
    if report.format in SFT_FORMATS:
        encoded = [encode_chat(tokenizer, to_messages(r.value, report.format), 10**9) for r in report.records]
        lengths = [len(e.input_ids) for e in encoded]
        card.loss_tokens_per_epoch = sum(min(e.loss_tokens, max_length) for e in encoded)
    elif report.format is Format.PREFERENCE:  # the longer of prompt + chosen and prompt + rejected

        pairs = [as_conversations(as_preference(r.value)) for r in report.records]
        lengths = [max(len(encode_chat(tokenizer, p["prompt"] + p[side], 10**9, "all").input_ids)
                       for side in ("chosen", "rejected")) for p in pairs]
    else:
        lengths = [len(tokenizer(str(r.value.get("text")), add_special_tokens=False)["input_ids"])
                   for r in report.records]
    card.lengths, card.over_max_length, card.tokens_per_epoch = token_summary(lengths, max_length)
    card.length_histogram = length_histogram(lengths)
    parameters = parameter_count(ref.path) if ref.local else None
    if parameters:
        card.estimated_seconds_per_epoch = round(estimate_train_seconds(card.tokens_per_epoch, parameters, method))


def token_counter(model: str, workspace: Workspace) -> Callable[[str], int]:
    """Tokens of a text under ``model``'s tokenizer (what cleaning's token limits count)."""
    tokenizer = load_tokenizer(resolve_model(model, workspace))
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def context_length(model: str, workspace: Workspace) -> int | None:
    """The longest sequence ``model`` reads, from its config (models/generation.py says which keys)."""
    from transformers import AutoConfig

    from tunesmith.models.generation import config_context_length

    try:
        config = AutoConfig.from_pretrained(resolve_model(model, workspace).path)
    except (OSError, ValueError):
        return None
    return config_context_length(config)


def clean_data(path: str | Path, out: str | Path, settings: CleanConfig, workspace: Workspace,
               progress=None) -> dict[str, Any]:
    """Clean ``path`` into ``out`` (rejects beside it) and write its card; token limits count under
    ``settings.model``'s tokenizer."""
    if not Path(path).is_file():
        raise DataError(f"no such file: {path}")
    count_tokens = token_counter(settings.model, workspace) if settings.model else None
    if settings.model and settings.max_tokens is None and (context := context_length(settings.model, workspace)):
        settings = settings.model_copy(update={"max_tokens": context})  # longer than the model reads: too long
    summary = clean_file(path, out, settings, count_tokens, progress)
    return write_card(summary, Path(out), count_tokens)
