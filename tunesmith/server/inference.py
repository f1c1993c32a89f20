"""Serving models: base models, fine-tuned runs and their checkpoints, by OpenAI model name.

Each base model is loaded once (once more per other adapter type: IA3, prompt or prefix
tuning, which peft cannot hold beside LoRA in one model). A LoRA fine-tune is an adapter on it (peft ``load_adapter`` /
``set_adapter``), so requests for different fine-tunes interleave without reloading the base;
at most ``max_adapters`` stay loaded per base (least recently used is dropped). A fully
fine-tuned run is its own model. Requests on one model take turns (one lock per base: the active
adapter is model state); a bounded wait queue turns overload into 429 + Retry-After.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import select

from tunesmith.models.loading import load_causal_lm, load_tokenizer
from tunesmith.models.store import ModelRef, list_models, resolve_model
from tunesmith.runs import Run, all_runs
from tunesmith.server.db import Database, JobRow
from tunesmith.server.errors import APIError, model_not_found
from tunesmith.server.jobs import checkpoint_dirs, fine_tuned_name
from tunesmith.training.hardware import inference_dtype
from tunesmith.training.tokenize import ensure_chat_template, prompt_ids, stop_strings, stop_token_ids
from tunesmith.workspace import Workspace


@dataclass
class Target:
    """What a model name resolves to: a base model, optionally an adapter or full weights on top."""

    name: str
    base: str                       # base model name (built-in / pulled / directory)
    adapter_dir: Path | None = None
    full_dir: Path | None = None
    owned_by: str = "tunesmith"
    created: int = 0

    @property
    def is_base(self) -> bool:
        return self.adapter_dir is None and self.full_dir is None


@dataclass
class BaseSlot:
    model: Any
    tokenizer: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: "OrderedDict[str, bool]" = field(default_factory=OrderedDict)  # loaded adapter names, LRU order


class ModelServer:
    def __init__(self, workspace: Workspace, db: Database, max_adapters: int = 8, max_waiting: int = 16):
        self.workspace, self.db, self.max_adapters = workspace, db, max_adapters
        self.slots: dict[str, BaseSlot] = {}
        self.classifiers: dict[str, Any] = {}
        self._loading = threading.Lock()
        self._waiting = threading.BoundedSemaphore(max_waiting)

    # ── names ──────────────────────────────────────────────────────────────────────────────
    def targets(self) -> list[Target]:
        found = [Target(m.name, m.name, owned_by="system") for m in list_models(self.workspace)
                 if m.pulled and "causal" in self._task(m.name)]
        with self.db.session() as session:
            jobs = list(session.scalars(select(JobRow).where(JobRow.run_id.is_not(None))))
        for job in jobs:
            run = Run(self.workspace.run_dir(job.run_id))
            if (job.settings or {}).get("recipe") == "classify":  # a retrained classifier: /v1/classifications
                continue
            if job.fine_tuned_model and job.status == "succeeded" and run.final_dir.exists():
                final = run.final_dir
                found.append(Target(job.fine_tuned_model, job.model, final if final.name == "adapter" else None,
                                    final if final.name == "model" else None, created=job.finished_at or 0))
            for step, path in checkpoint_dirs(self.workspace, job):
                found.append(Target(f"{fine_tuned_name(job)}:ckpt-step-{step}", job.model, path,
                                    created=int(path.stat().st_mtime)))
        found += self._cli_runs({job.run_id for job in jobs})
        return found + self._aliases(found)

    def _aliases(self, found: list[Target]) -> list[Target]:
        """Serving aliases (``<home>/aliases.json``, set when a retrained model is promoted): a
        stable name clients call, pointing at whichever model won the last comparison."""
        from dataclasses import replace

        from tunesmith.monitoring.aliases import read_aliases

        by_name = {t.name: t for t in found}
        return [replace(by_name[model], name=alias, owned_by="tunesmith") for alias, model in read_aliases(self.workspace).items()
                if model in by_name and alias not in by_name]

    def _cli_runs(self, job_runs: set[str]) -> list[Target]:
        """Language-model runs trained with ``tunesmith train`` (not by a job), named by run id."""
        found = []
        for run in all_runs(self.workspace):
            info = run.info()
            if (run.id in job_runs or info.get("status") != "succeeded" or info.get("recipe", "sft") == "classify"
                    or not run.final_dir.exists()):
                continue
            final = run.final_dir
            found.append(Target(run.id, info["base_model"], final if final.name == "adapter" else None,
                                final if final.name == "model" else None, created=int(info.get("finished_at") or 0)))
        return found

    def _task(self, name: str) -> str:
        import json

        from tunesmith.models.pull import MANIFEST
        from tunesmith.models.registry import BUILTIN_MODELS

        spec = BUILTIN_MODELS.get(name)
        if spec is not None:
            return spec.task
        manifest = json.loads((self.workspace.model_dir(name) / MANIFEST).read_text())
        return manifest.get("task", "causal-lm")

    def resolve(self, name: str) -> Target:
        for target in self.targets():
            if target.name == name:
                return target
        raise model_not_found(name)

    def delete(self, name: str) -> dict:
        """Delete a fine-tuned model's weights, a checkpoint, or a pulled base model."""
        import shutil

        target = self.resolve(name)
        path = target.full_dir or target.adapter_dir or self.workspace.model_dir(target.name)
        with self._loading:
            for key, slot in list(self.slots.items()):
                adapter = _adapter_key(name)
                if key in (target.name, f"full:{target.full_dir}"):
                    del self.slots[key]
                elif adapter in slot.adapters:
                    with slot.lock:
                        slot.adapters.pop(adapter)
                        slot.model.delete_adapter(adapter)
        shutil.rmtree(path)
        return {"id": name, "object": "model", "deleted": True}

    def classify(self, run_ref: str, texts: list[str]) -> dict:
        """Labels and probabilities from a classify run (``tunesmith train`` with recipe: classify)."""
        from tunesmith.errors import TunesmithError
        from tunesmith.predict import load_classifier, predict_texts
        from tunesmith.monitoring.aliases import read_aliases
        from tunesmith.workspace import is_safe_name

        # A run id (or an alias of one) only, looked up in the home: a request's string never becomes a path.
        run_id = read_aliases(self.workspace).get(run_ref, run_ref)
        run_id = self._classifier_job_run(run_id) or run_id  # the ft: name of a retraining job
        with self._loading:
            if run_id not in self.classifiers:
                run = Run(self.workspace.run_dir(run_id)) if is_safe_name(run_id) else None
                if run is None or not run.info_path.exists():
                    raise model_not_found(run_ref)
                try:
                    self.classifiers[run_id] = load_classifier(run, self.workspace)
                except TunesmithError:
                    raise model_not_found(run_ref) from None
            classifier = self.classifiers[run_id]
        results = predict_texts(classifier, texts, top_k=len(classifier.labels))
        return {"object": "list", "model": run_ref, "data": [
            {"object": "classification", "index": i, "label": r["label"], "confidence": r["confidence"],
             "probabilities": {t["label"]: t["probability"] for t in r["top"]}} for i, r in enumerate(results)]}

    def _classifier_job_run(self, name: str) -> str | None:
        if not name.startswith("ft:"):
            return None
        with self.db.session() as session:
            job = session.scalars(select(JobRow).where(JobRow.fine_tuned_model == name,
                                                       JobRow.status == "succeeded")).first()
        return job.run_id if job is not None else None

    # ── loading ────────────────────────────────────────────────────────────────────────────
    def _slot(self, key: str, ref: ModelRef) -> BaseSlot:
        with self._loading:
            if key not in self.slots:
                tokenizer = load_tokenizer(ref)
                ensure_chat_template(tokenizer)
                model = load_causal_lm(ref, inference_dtype())
                model.eval()
                self.slots[key] = BaseSlot(model, tokenizer)
            return self.slots[key]

    def acquire(self, target: Target):
        """(slot, tokenizer, context manager that selects the adapter) for a target."""
        if target.full_dir is not None:
            slot = self._slot(f"full:{target.full_dir}", ModelRef(target.name, str(target.full_dir)))
            return slot, slot.tokenizer, None
        # peft holds adapters of one type per model (LoRA and DoRA together; IA3 or prompt learning
        # cannot join them): each other type gets a base of its own.
        kind = _adapter_kind(target.adapter_dir)
        key = target.base if kind == "LORA" else f"{target.base}|{kind}"
        slot = self._slot(key, resolve_model(target.base, self.workspace))
        return slot, slot.tokenizer, target.adapter_dir

    def _activate(self, slot: BaseSlot, name: str, adapter_dir: Path | None):
        """Select the adapter (loading it if needed, dropping the least recently used); called with the lock held."""
        from peft import PeftModel

        if adapter_dir is None:
            return slot.model.disable_adapter() if isinstance(slot.model, PeftModel) else _Null()
        key = _adapter_key(name)
        if not isinstance(slot.model, PeftModel):
            slot.model = PeftModel.from_pretrained(slot.model, str(adapter_dir), adapter_name=key)
            slot.model.eval()
        elif key not in slot.adapters:
            slot.model.load_adapter(str(adapter_dir), adapter_name=key)
        slot.adapters[key] = True
        slot.adapters.move_to_end(key)
        while len(slot.adapters) > self.max_adapters:
            oldest, _ = slot.adapters.popitem(last=False)
            slot.model.delete_adapter(oldest)
        slot.model.set_adapter(key)
        return _Null()

    # ── generation ─────────────────────────────────────────────────────────────────────────
    def _admitted(self):
        if not self._waiting.acquire(blocking=False):
            raise APIError(429, "The server is at capacity; retry shortly.", "rate_limit_exceeded",
                           type_="rate_limit_error", headers={"Retry-After": "2"})
        return self._waiting

    def complete(self, name: str, messages: list[dict] | None, prompt: str | None, params: dict) -> dict:
        target = self.resolve(name)
        slot, tokenizer, adapter = self.acquire(target)
        ids = _prompt(tokenizer, messages, prompt)
        admitted = self._admitted()
        try:
            with slot.lock, self._activate(slot, target.name, adapter):
                texts, counts, reasons = _generate(slot.model, tokenizer, ids, params)
        finally:
            admitted.release()
        return {"texts": texts, "completion_tokens": counts, "prompt_tokens": len(ids), "finish_reasons": reasons}

    def stream(self, name: str, messages: list[dict] | None, prompt: str | None, params: dict) -> "Stream":
        """Text pieces of one completion, as they are generated."""
        target = self.resolve(name)
        slot, tokenizer, adapter = self.acquire(target)
        ids = _prompt(tokenizer, messages, prompt)
        admitted = self._admitted()

        def pieces():
            try:
                with slot.lock, self._activate(slot, target.name, adapter):
                    yield from _stream(slot.model, tokenizer, ids, params)
            finally:
                admitted.release()
        return Stream(pieces(), tokenizer, len(ids))


class Stream:
    """A streamed completion: its pieces as they come, then what was said and how many tokens
    (counted on the finished text: the pieces are decoded text, not one token each)."""

    def __init__(self, pieces: Iterator[str], tokenizer, prompt_tokens: int):
        self._pieces, self._tokenizer, self.prompt_tokens = pieces, tokenizer, prompt_tokens
        self._text: list[str] = []
        self.completion_tokens: int | None = None

    def __iter__(self) -> Iterator[str]:
        for piece in self._pieces:
            self._text.append(piece)
            yield piece
        self.completion_tokens = len(self._tokenizer(self.text, add_special_tokens=False)["input_ids"])

    @property
    def text(self) -> str:
        return "".join(self._text)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _adapter_kind(adapter_dir: Path) -> str:
    import json

    return json.loads((adapter_dir / "adapter_config.json").read_text()).get("peft_type", "LORA")


def _adapter_key(name: str) -> str:
    return "a" + "".join(c if c.isalnum() else "_" for c in name)[-60:]


def _prompt(tokenizer, messages: list[dict] | None, prompt: str | None) -> list[int]:
    if messages is not None:
        return prompt_ids(tokenizer, [{"role": m["role"], "content": _text(m.get("content"))} for m in messages])
    return tokenizer(prompt or "", add_special_tokens=True)["input_ids"]


def _text(content: Any) -> str:
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def _generation_kwargs(tokenizer, params: dict) -> dict:
    import torch

    kwargs: dict[str, Any] = {"max_new_tokens": params["max_tokens"], "eos_token_id": stop_token_ids(tokenizer),
                              "pad_token_id": tokenizer.pad_token_id}
    temperature = params["temperature"]
    if temperature and temperature > 0:
        kwargs |= {"do_sample": True, "temperature": temperature, "top_p": params["top_p"], "top_k": None}
    else:
        kwargs |= {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    stops = list(params.get("stop") or []) + stop_strings(tokenizer)
    if stops:
        kwargs |= {"stop_strings": stops, "tokenizer": tokenizer}
    if params.get("seed") is not None:
        torch.manual_seed(int(params["seed"]))
    return kwargs


def _cut(text: str, stops: list[str]) -> tuple[str, bool]:
    for stop in stops:
        if stop in text:
            return text.split(stop, 1)[0], True
    return text, False


def _generate(model, tokenizer, ids: list[int], params: dict) -> tuple[list[str], list[int], list[str]]:
    import torch

    kwargs = _generation_kwargs(tokenizer, params)
    stops = list(params.get("stop") or []) + stop_strings(tokenizer)
    texts, counts, reasons = [], [], []
    with torch.inference_mode():
        for _ in range(params["n"]):
            out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 **kwargs)[0, len(ids):]
            text, stopped = _cut(tokenizer.decode(out, skip_special_tokens=True), stops)
            ended = stopped or (len(out) and int(out[-1]) in stop_token_ids(tokenizer)) or len(out) < params["max_tokens"]
            texts.append(text)
            counts.append(int(len(out)))
            reasons.append("stop" if ended else "length")
    return texts, counts, reasons


def _stream(model, tokenizer, ids: list[int], params: dict) -> Iterator[str]:
    import torch
    from transformers import TextIteratorStreamer

    kwargs = _generation_kwargs(tokenizer, params)
    stops = list(params.get("stop") or []) + stop_strings(tokenizer)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    errors: list[BaseException] = []

    def run():
        try:
            with torch.inference_mode():
                model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               streamer=streamer, **kwargs)
        except BaseException as e:  # surfaced to the client after the stream ends
            errors.append(e)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    held = ""
    longest = max((len(s) for s in stops), default=0)
    for piece in streamer:
        held += piece
        cut, stopped = _cut(held, stops)
        if stopped:
            if cut:
                yield cut
            break
        if len(held) > longest:
            yield held[: len(held) - longest]
            held = held[len(held) - longest:]
    else:
        cut, _ = _cut(held, stops)
        if cut:
            yield cut
    worker.join()
    if errors:
        raise errors[0]
