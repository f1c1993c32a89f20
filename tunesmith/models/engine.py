"""Loading a model for use, and running it: batched generation, streaming, and loss.

Shared by evaluation, ``tunesmith chat`` / ``generate`` and (later) the server. A *target* is a
run (its base model plus its adapter, or its fully fine-tuned weights) or a model reference.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterator

from tunesmith.errors import TunesmithError
from tunesmith.models.loading import load_causal_lm, load_tokenizer
from tunesmith.models.store import ModelRef, resolve_model
from tunesmith.runs import Run, find_run, is_run_ref
from tunesmith.models.collate import PadCollator, supports_loss_positions
from tunesmith.models.hardware import inference_dtype
from tunesmith.models.chat import ensure_chat_template, prompt_ids, stop_strings, stop_token_ids, strip_stop_strings
from tunesmith.workspace import Workspace


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


def load(target: str, workspace: Workspace, merge: bool = False) -> Loaded:
    """Load a run or a model. ``merge`` folds a LoRA adapter into the weights (faster decoding)."""
    if is_run_ref(target, workspace):
        return load_run(find_run(target, workspace), workspace, merge)
    ref = resolve_model(target, workspace)
    tokenizer = load_tokenizer(ref)
    ensure_chat_template(tokenizer)
    return Loaded(ref.name, _eval_mode(load_causal_lm(ref, inference_dtype())), tokenizer)


def load_run(run: Run, workspace: Workspace, merge: bool = False, dtype=None) -> Loaded:
    """A run's trained model. A run that started from another run (preference tuning on top of
    an SFT run) has that run's weights, adapter merged, under its own adapter."""
    final = run.final_dir
    if not final.exists():
        raise TunesmithError(f"run {run.id} has no trained weights yet ({final} is missing); "
                             f"finish it with: tunesmith train --resume {run.id}")
    info = run.info()
    dtype = dtype or inference_dtype()
    tokenizer = load_tokenizer(ModelRef(run.id, str(final)))  # the tokenizer and template it was trained with
    if info.get("method") == "full":
        return Loaded(run.id, _eval_mode(load_causal_lm(ModelRef(run.id, str(final)), dtype)), tokenizer, run=run)
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


def _eval_mode(model):
    model.eval()
    return model


def generate(loaded: Loaded, conversations: list[list[dict[str, str]]], max_new_tokens: int = 256,
             batch_size: int = 8, temperature: float = 0.0) -> list[str]:
    """Assistant replies for many conversations: batched (left-padded, length-sorted), KV-cached."""
    import torch

    tokenizer = loaded.tokenizer
    encoded = [prompt_ids(tokenizer, c) for c in conversations]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    replies: list[str] = [""] * len(encoded)
    texts = stop_strings(tokenizer)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(encoded[i])) + encoded[i] for i in batch])
        mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in batch])
        with torch.inference_mode():
            out = loaded.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                        **_stopping(tokenizer), **_sampling(temperature))
        for row, i in enumerate(batch):
            text = tokenizer.decode(out[row, width:], skip_special_tokens=True)
            replies[i] = strip_stop_strings(text, texts).strip()
    return replies


def stream(loaded: Loaded, conversation: list[dict[str, str]], max_new_tokens: int = 256,
           temperature: float = 0.0) -> Iterator[str]:
    """The assistant's reply to one conversation, piece by piece as it is generated."""
    import torch
    from transformers import TextIteratorStreamer

    tokenizer = loaded.tokenizer
    ids = torch.tensor([prompt_ids(tokenizer, conversation)])
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                  streamer=streamer, **_stopping(tokenizer), **_sampling(temperature))
    worker = threading.Thread(target=lambda: _generate_quietly(loaded.model, kwargs), daemon=True)
    worker.start()
    texts, held = stop_strings(tokenizer), ""
    for piece in streamer:
        if not texts:
            yield piece
            continue
        # Hold back text that could be the start of a stop string; stop at a complete one.
        held += piece
        cut = strip_stop_strings(held, texts)
        if cut != held:
            yield cut
            break
        safe = len(held) - max(len(t) for t in texts)
        if safe > 0:
            yield held[:safe]
            held = held[safe:]
    else:
        yield held
    worker.join()


def _generate_quietly(model, kwargs) -> None:
    import torch

    with torch.inference_mode():
        model.generate(**kwargs)


def _stopping(tokenizer) -> dict[str, Any]:
    stops = {"eos_token_id": stop_token_ids(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    texts = stop_strings(tokenizer)
    return {**stops, "stop_strings": texts, "tokenizer": tokenizer} if texts else stops


def _sampling(temperature: float) -> dict[str, Any]:
    if temperature <= 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {"do_sample": True, "temperature": temperature}


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
