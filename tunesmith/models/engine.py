"""Using a model: load it, generate from it (batched or streamed), score text with it.

The one model-use API of tunesmith: evaluation, labelling, preference training, ``tunesmith
chat`` / ``generate`` and the server all load and run models through here. A *target* is a run
(its base model plus its adapter, or its fully fine-tuned weights) or a model reference.

One loading path per kind of model:

- a base model or a fully fine-tuned one: ``load_model(ref)`` (the tokenizer given a chat
  template when it has none, weights in ``inference_dtype()``, eval mode);
- an adapter run (LoRA, IA3, prompt tuning ...): ``load_run``, the adapter on its base (or on the
  run it started from, merged);
- a classify run: ``load_classifier``.

Generation itself is ``models/generation.py`` (the ``Engine`` interface over token ids and its
transformers implementation); ``generate`` and ``stream`` below are its conversation-level use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from tunesmith.config import load_config
from tunesmith.errors import TunesmithError
from tunesmith.models import lexical
from tunesmith.models.chat import ensure_chat_template, prompt_ids
from tunesmith.models.classifier import load_trained_classifier, read_labels
from tunesmith.models.collate import PadCollator, supports_loss_positions
from tunesmith.models.generation import Completion, Engine, Sampling, TextStream, TransformersEngine
from tunesmith.models.hardware import inference_dtype
from tunesmith.models.lexical import LexicalClassifier
from tunesmith.models.loading import load_causal_lm, load_tokenizer, quiet_transformers
from tunesmith.models.store import ModelRef, resolve_model
from tunesmith.runs import Run, find_run, is_run_ref
from tunesmith.workspace import Workspace

__all__ = ["Completion", "Engine", "Loaded", "LoadedClassifier", "Sampling", "TextStream", "TransformersEngine",
           "base_model_of", "generate", "load", "load_classifier", "load_model", "load_run", "load_start",
           "mean_nll", "sequence_logprobs", "stream"]


# ── loading ─────────────────────────────────────────────────────────────────────────────────
@dataclass
class Loaded:
    """A model ready to use. For a LoRA run, ``model`` is a PeftModel: ``base_context()`` switches the adapter off."""

    name: str
    model: Any
    tokenizer: Any
    is_adapter: bool = False
    run: Run | None = None

    def base_context(self):
        if not self.is_adapter:
            raise TunesmithError(f"{self.name} has no adapter to switch off")
        return self.model.disable_adapter()

    def engine(self, batch_size: int = 8) -> TransformersEngine:
        return TransformersEngine(self.model, self.tokenizer, batch_size)


def load(target: str, workspace: Workspace, merge: bool = False) -> Loaded:
    """Load a run or a model. ``merge`` folds a LoRA adapter into the weights (faster decoding)."""
    if is_run_ref(target, workspace):
        return load_run(find_run(target, workspace), workspace, merge)
    return load_model(resolve_model(target, workspace))


def load_model(ref: ModelRef, dtype=None) -> Loaded:
    """A base model, or a fully fine-tuned one (its own tokenizer and template), for inference."""
    tokenizer = load_tokenizer(ref)
    ensure_chat_template(tokenizer)
    return Loaded(ref.name, _eval_mode(load_causal_lm(ref, dtype or inference_dtype())), tokenizer)


def load_run(run: Run, workspace: Workspace, merge: bool = False, dtype=None) -> Loaded:
    """A run's trained model. A run that started from another run (preference tuning on top of
    an SFT run) has that run's weights, adapter merged, under its own adapter."""
    final = _final_dir(run)
    info = run.info()
    if info.get("method") == "full":
        full = load_model(ModelRef(run.id, str(final)), dtype)
        return Loaded(run.id, full.model, full.tokenizer, run=run)
    dtype = dtype or inference_dtype()
    tokenizer = load_tokenizer(ModelRef(run.id, str(final)))  # the tokenizer and template it was trained with
    if info.get("start_run"):
        base = load_run(find_run(info["start_run"], workspace), workspace, merge=True, dtype=dtype).model
    else:
        base = load_causal_lm(base_model_of(run, workspace), dtype)
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, str(final))
    if merge:
        return Loaded(run.id, _eval_mode(model.merge_and_unload()), tokenizer, run=run)
    return Loaded(run.id, _eval_mode(model), tokenizer, is_adapter=True, run=run)


def load_start(run: Run, workspace: Workspace) -> Loaded:
    """What a run started from, loaded on its own: another run (merged) or its base model."""
    info = run.info()
    if info.get("start_run"):
        return load_run(find_run(info["start_run"], workspace), workspace, merge=True)
    return load(info["base_model"], workspace)


def base_model_of(run: Run, workspace: Workspace) -> ModelRef:
    """The run's base model, found by the name recorded in run.json (never the adapter's absolute path)."""
    info = run.info()
    return resolve_model(info.get("base_model") or info["base_model_path"], workspace)


@dataclass
class LoadedClassifier:
    name: str
    model: Any
    tokenizer: Any
    labels: list[str]
    max_length: int
    lexical: LexicalClassifier | None = None  # the TF-IDF member of an ``ensemble: tfidf`` run
    lexical_weight: float = 0.0                # its share of the mixture, chosen on validation

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Label probabilities, one row per text: the encoder's, mixed with the lexical member's
        where the run has one."""
        neural = self.neural_proba(texts, batch_size)
        if self.lexical is None or not self.lexical_weight or not len(texts):
            return neural
        return (1 - self.lexical_weight) * neural + self.lexical_weight * self.lexical.predict_proba(texts)

    def neural_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """The encoder's label probabilities alone (what an exported model computes). Texts are
        batched by length (less padding)."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                batch = self.tokenizer([texts[i] for i in chunk], truncation=True, max_length=self.max_length,
                                       padding=True, return_tensors="pt")
                logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
                out[chunk] = torch.softmax(logits, dim=-1).numpy()
        return out


def load_classifier(run: Run, workspace: Workspace) -> LoadedClassifier:
    """A classify run's model (its full weights, or its adapter and head on the base, merged)."""
    quiet_transformers()
    info = run.info()
    if info.get("recipe") != "classify":
        raise TunesmithError(f"run {run.id} is a {info.get('recipe', 'sft')} run, not a classifier; "
                             f"use `tunesmith generate {run.id}` for text generation")
    final = _final_dir(run)
    meta = read_labels(final)
    tokenizer = load_tokenizer(ModelRef(run.id, str(final)))
    model = load_trained_classifier(final, info["base_model_path"], meta["labels"], meta.get("pooling", "model"),
                                    is_adapter=final.name == "adapter", pad_token_id=tokenizer.pad_token_id)
    return LoadedClassifier(run.id, _eval_mode(model), tokenizer, meta["labels"],
                            load_config(run.config_path).data.max_length, lexical.load(final),
                            float(meta.get("lexical_weight", 0.0)))


def _final_dir(run: Run):
    if not run.final_dir.exists():
        raise TunesmithError(f"run {run.id} has no trained weights yet ({run.final_dir} is missing); "
                             f"finish it with: tunesmith train --resume {run.id}")
    return run.final_dir


def _eval_mode(model):
    model.eval()
    return model


# ── generating ──────────────────────────────────────────────────────────────────────────────
def generate(loaded: Loaded, conversations: list[list[dict[str, str]]], max_new_tokens: int = 256,
             batch_size: int = 8, temperature: float = 0.0) -> list[str]:
    """Assistant replies for many conversations (batched, length-sorted, KV-cached), whitespace stripped."""
    prompts = [prompt_ids(loaded.tokenizer, c) for c in conversations]
    choices = loaded.engine(batch_size).generate(prompts, Sampling(max_new_tokens, temperature))
    return [completions[0].text.strip() for completions in choices]


def stream(loaded: Loaded, conversation: list[dict[str, str]], max_new_tokens: int = 256,
           temperature: float = 0.0) -> Iterator[str]:
    """The assistant's reply to one conversation, piece by piece as it is generated; generation
    stops when the reader stops reading."""
    text = loaded.engine().stream(prompt_ids(loaded.tokenizer, conversation), Sampling(max_new_tokens, temperature))
    try:
        yield from text
    finally:
        text.cancel()


# ── scoring ─────────────────────────────────────────────────────────────────────────────────
def mean_nll(loaded: Loaded, examples: list[dict[str, list[int]]], batch_size: int = 8) -> tuple[float, int]:
    """Token-weighted mean negative log-likelihood over label tokens, and the token count."""
    import torch

    collate = PadCollator(loaded.tokenizer.pad_token_id, loss_positions_only=True)
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size])
        tokens = int(batch["shift_labels"].numel())
        if not supports_loss_positions(loaded.model):
            batch.pop("logits_to_keep"), batch.pop("shift_labels")
        with torch.inference_mode():
            loss = loaded.model(**batch).loss  # mean over this batch's label tokens
        total += loss.item() * tokens
        count += tokens
    return (total / count if count else float("nan")), count


def sequence_logprobs(loaded: Loaded, examples: list[dict[str, list[int]]], batch_size: int = 8) -> list[tuple[float, int]]:
    """For each example, the summed log-probability of its label tokens and their count (what
    preference evaluation compares between a chosen and a rejected answer)."""
    import torch

    collate = PadCollator(loaded.tokenizer.pad_token_id, loss_positions_only=True)
    fused = supports_loss_positions(loaded.model)
    results: list[tuple[float, int]] = []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size])
        keep, targets = batch.pop("logits_to_keep"), batch.pop("shift_labels")
        batch.pop("labels")
        with torch.inference_mode():
            logits = loaded.model(**batch, **({"logits_to_keep": keep} if fused else {})).logits
            if not fused:  # prompt learning prepends virtual tokens: keep the last ``width`` positions
                logits = logits[:, -keep.shape[1]:][keep]
            logits = logits.reshape(-1, logits.shape[-1]).float()
            token_logprobs = torch.log_softmax(logits, -1).gather(-1, targets[:, None])[:, 0]
        counts = keep.sum(1).tolist()
        for chunk, count in zip(token_logprobs.split(counts), counts):
            results.append((chunk.sum().item(), count))
    return results
