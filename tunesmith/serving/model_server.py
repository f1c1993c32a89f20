"""Serving models: base models, fine-tuned runs and their checkpoints, by OpenAI model name.

Each base model is loaded once (once more per other adapter type: IA3, prompt or prefix
tuning, which peft cannot hold beside LoRA in one model). A LoRA fine-tune is an adapter on it (peft ``load_adapter`` /
``set_adapter``), so requests for different fine-tunes interleave without reloading the base;
at most ``max_adapters`` stay loaded per base (least recently used is dropped). A fully
fine-tuned run is its own model. Requests on one model take turns (one lock per base: the active
adapter is model state); a bounded wait queue turns overload into 429 + Retry-After.

A generation holds its model's lock in the thread that generates, never in the client's
stream: a client that goes away sets the request's cancel event, generation stops at the next
token (a ``StoppingCriteria``) and the lock and the admission slot are released by that thread.
A prompt longer than the model's context is a 400 before anything is computed.

Model names resolve from a cache of what the home holds (jobs, runs, checkpoints, aliases),
scanned again when the home changes (the mtimes of its models, runs and aliases), when a name
is not found, or after ``RESCAN_SECONDS``: a chat request does not read every job's checkpoints.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import select
from transformers import StoppingCriteria, TextIteratorStreamer

from tunesmith.models.loading import load_causal_lm, load_tokenizer
from tunesmith.models.store import ModelRef, list_models, resolve_model
from tunesmith.runs import Run, all_runs
from tunesmith.jobs.db import Database, JobRow
from tunesmith.errors import APIError, model_not_found

RESCAN_SECONDS = 30.0
DEFAULT_MAX_TOKENS = 256  # when a request names none: a CPU server's answer, not the whole context
from tunesmith.jobs.fine_tuning import checkpoint_dirs, fine_tuned_name
from tunesmith.models.hardware import inference_dtype
from tunesmith.models.chat import ensure_chat_template, prompt_ids, stop_strings, stop_token_ids
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
    alias_of: str | None = None     # a serving alias: the model name it points at

    @property
    def is_base(self) -> bool:
        return self.adapter_dir is None and self.full_dir is None

    def present(self) -> bool:
        weights = self.full_dir or self.adapter_dir
        return weights is None or weights.exists()


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
        self.capacity = max_waiting
        self._known: tuple[tuple, float, list[Target]] | None = None  # (home fingerprint, when, targets)

    # ── names ──────────────────────────────────────────────────────────────────────────────
    def targets(self, fresh: bool = False) -> list[Target]:
        """Every model name the server answers to (cached; ``fresh`` scans the home again)."""
        fingerprint = self._fingerprint()
        known = self._known
        if fresh or known is None or known[0] != fingerprint or time.monotonic() - known[1] > RESCAN_SECONDS:
            known = self._known = (fingerprint, time.monotonic(), self._scan())
        return known[2]

    def forget(self) -> None:
        """Drop the name cache (after a delete, or a change this process made)."""
        self._known = None

    def _fingerprint(self) -> tuple:
        home = self.workspace.home
        return tuple(_mtime(p) for p in (home / "models", self.workspace.runs_dir, home / "aliases.json"))

    def _scan(self) -> list[Target]:
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

        from tunesmith.serving.aliases import read_aliases

        by_name = {t.name: t for t in found}
        return [replace(by_name[model], name=alias, owned_by="tunesmith", alias_of=model) for alias, model in read_aliases(self.workspace).items()
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
        from tunesmith.catalog import BUILTIN_MODELS

        spec = BUILTIN_MODELS.get(name)
        if spec is not None:
            return spec.task
        manifest = json.loads((self.workspace.model_dir(name) / MANIFEST).read_text())
        return manifest.get("task", "causal-lm")

    def resolve(self, name: str) -> Target:
        target = _named(self.targets(), name)
        if target is None or not target.present():  # new since the last scan, or deleted since
            target = _named(self.targets(fresh=True), name)
        if target is None:
            raise model_not_found(name)
        return target

    def delete(self, name: str) -> dict:
        """Delete a serving alias (the alias only), or a fine-tuned model's weights, a checkpoint or
        a pulled base model — unless other models depend on it (a 409 naming them)."""
        import shutil

        from tunesmith.serving.aliases import read_aliases, remove_alias

        target = self.resolve(name)
        if target.alias_of is not None:
            remove_alias(self.workspace, name)
            self.forget()
            return {"id": name, "object": "model", "deleted": True}
        aliases = read_aliases(self.workspace)
        dependents = self.dependents(target, aliases)
        if dependents:
            shown = ", ".join(dependents[:10]) + (f" and {len(dependents) - 10} more" if len(dependents) > 10 else "")
            raise APIError(409, f"The model '{name}' cannot be deleted: {shown} depend(s) on it. Delete those first.",
                           "model_in_use", "model")
        path = target.full_dir or target.adapter_dir or self.workspace.model_dir(target.name)
        self._unload(target)
        shutil.rmtree(path)
        self.forget()
        return {"id": name, "object": "model", "deleted": True}

    def dependents(self, target: Target, aliases: dict[str, str]) -> list[str]:
        """The names that stop working when ``target`` goes: aliases pointing at it and, for a
        base model, the adapters trained on it (a fully fine-tuned model has weights of its own)."""
        names = sorted(alias for alias, model in aliases.items() if model == target.name)
        if target.is_base:
            same = {target.name, resolve_model(target.name, self.workspace).path}  # a run may name its base by path
            names += sorted(t.name for t in self.targets() if t.adapter_dir is not None and t.alias_of is None
                            and (t.base in same or _local_path(t.base) in same))
        return names

    def _unload(self, target: Target) -> None:
        adapter = _adapter_key(target.name)
        with self._loading:
            for key, slot in list(self.slots.items()):
                if key in (target.name, f"full:{target.full_dir}") or key.startswith(f"{target.name}|"):
                    del self.slots[key]
                elif adapter in slot.adapters:
                    with slot.lock:
                        slot.adapters.pop(adapter)
                        slot.model.delete_adapter(adapter)

    def classify(self, run_ref: str, texts: list[str]) -> dict:
        """Labels and probabilities from a classify run (``tunesmith train`` with recipe: classify)."""
        from tunesmith.errors import TunesmithError
        from tunesmith.models.predict import load_classifier, predict_texts
        from tunesmith.serving.aliases import read_aliases
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
        """(slot, tokenizer, adapter directory or None) for a target."""
        if target.full_dir is not None:
            slot = self._slot(f"full:{target.full_dir}", ModelRef(target.name, str(target.full_dir)))
            return slot, slot.tokenizer, None
        # peft holds adapters of one type per model (LoRA and DoRA together; IA3 or prompt learning
        # cannot join them): each other type gets a base of its own. The base model itself shares LoRA's.
        kind = _adapter_kind(target.adapter_dir) if target.adapter_dir is not None else "LORA"
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

    def status(self) -> dict:
        """What an operator (or a load test) checks for leaks: requests admitted now, models loaded."""
        in_use = self.capacity - self._waiting._value  # noqa: SLF001 - a BoundedSemaphore keeps no public count
        return {"admitted": in_use, "capacity": self.capacity,
                "generating": sum(slot.lock.locked() for slot in list(self.slots.values())),
                "models_loaded": sorted(self.slots), "adapters_loaded": sum(len(s.adapters) for s in self.slots.values()),
                "classifiers_loaded": sorted(self.classifiers)}

    # ── generation ─────────────────────────────────────────────────────────────────────────
    def _admitted(self):
        if not self._waiting.acquire(blocking=False):
            raise APIError(429, "The server is at capacity; retry shortly.", "rate_limit_exceeded",
                           type_="rate_limit_error", headers={"Retry-After": "2"})
        return self._waiting

    def complete(self, name: str, messages: list[dict] | None, prompt: str | list[str] | None, params: dict,
                 cancel: threading.Event | None = None) -> dict:
        """``n`` choices for the conversation, or for each prompt (prompt-major, as OpenAI orders them)."""
        target = self.resolve(name)
        slot, tokenizer, adapter = self.acquire(target)
        prompts = [_prompt(tokenizer, messages, None)] if messages is not None else \
            [_prompt(tokenizer, None, p) for p in ([prompt] if isinstance(prompt, str) else prompt or [""])]
        budgets = [_budget(slot.model, ids, params, "messages" if messages is not None else "prompt") for ids in prompts]
        cancel = cancel or threading.Event()
        admitted = self._admitted()
        try:
            with slot.lock, self._activate(slot, target.name, adapter):
                results = [_generate(slot.model, tokenizer, ids, params | {"max_tokens": budget}, cancel)
                           for ids, budget in zip(prompts, budgets)]
        finally:
            admitted.release()
        return {"texts": [t for texts, _, _ in results for t in texts],
                "completion_tokens": [c for _, counts, _ in results for c in counts],
                "finish_reasons": [r for _, _, reasons in results for r in reasons],
                "prompt_tokens": sum(len(ids) for ids in prompts)}

    def stream(self, name: str, messages: list[dict] | None, prompt: str | None, params: dict) -> "Stream":
        """Text pieces of one completion, as they are generated (see the module docstring: the
        generating thread owns the lock and the admission slot; ``Stream.cancel`` stops it)."""
        target = self.resolve(name)
        slot, tokenizer, adapter = self.acquire(target)
        ids = _prompt(tokenizer, messages, prompt)
        budget = _budget(slot.model, ids, params, "messages" if messages is not None else "prompt")
        admitted = self._admitted()
        stream = Stream(tokenizer, len(ids))
        stream.stops = list(params.get("stop") or []) + stop_strings(tokenizer)

        def run():
            try:
                with slot.lock:
                    if stream.cancelled.is_set():  # the client left while waiting for the model
                        return
                    with self._activate(slot, target.name, adapter):
                        _stream_into(slot.model, tokenizer, ids, params | {"max_tokens": budget}, stream)
            except BaseException as e:  # surfaced to the client after the stream ends
                stream.errors.append(e)
            finally:
                stream.streamer.end()
                admitted.release()
                stream.finished.set()

        threading.Thread(target=run, daemon=True, name=f"generate {name}").start()
        return stream


class Cancelled(StoppingCriteria):
    """Stops ``generate`` at the next token once the request's event is set (a client gone)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _CountingStreamer(TextIteratorStreamer):
    """transformers' text streamer that also counts the tokens generated (the pieces it yields
    are decoded text: re-tokenizing them would miscount)."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.generated = 0

    def put(self, value):
        if not (self.skip_prompt and self.next_tokens_are_prompt):
            self.generated += int(value.numel())
        super().put(value)


class Stream:
    """A streamed completion: its pieces as they come, then what was said and how many tokens.
    ``cancel()`` (a client that disconnected) stops the generation within one token."""

    def __init__(self, tokenizer, prompt_tokens: int):
        self.prompt_tokens = prompt_tokens
        self.streamer = _CountingStreamer(tokenizer)
        self.cancelled, self.finished = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        self.stops: list[str] = []
        self._text: list[str] = []
        self.completion_tokens: int | None = None

    def __iter__(self) -> Iterator[str]:
        for piece in _cut_stream(self.streamer, self.stops, self.cancel):
            self._text.append(piece)
            yield piece
        self.finished.wait()
        if self.errors:
            raise self.errors[0]
        self.completion_tokens = self.streamer.generated

    def cancel(self) -> None:
        self.cancelled.set()

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


def _local_path(name: str) -> str | None:
    path = Path(name)
    return str(path.resolve()) if path.is_absolute() or path.exists() else None


def _named(targets: list[Target], name: str) -> Target | None:
    return next((t for t in targets if t.name == name), None)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


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


def _budget(model, ids: list[int], params: dict, param: str) -> int:
    """The tokens this request may generate: a prompt that leaves no room in the model's context
    is a 400 (``context_length_exceeded``, as OpenAI answers), and so is a ``max_tokens`` asked for
    explicitly beyond it; an implicit one is cut to what the context leaves."""
    context = context_length(model)
    wanted = params["max_tokens"] or DEFAULT_MAX_TOKENS
    if context is None:
        return wanted
    if len(ids) >= context:
        raise APIError(400, f"This model's maximum context length is {context} tokens. However, your "
                       f"{'messages' if param == 'messages' else 'prompt'} resulted in {len(ids)} tokens. "
                       "Please reduce the length of the messages.", "context_length_exceeded", param)
    if params.get("explicit_max_tokens") and len(ids) + wanted > context:
        raise APIError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                       f"{len(ids) + wanted} tokens ({len(ids)} in the {param}, {wanted} in the completion). "
                       "Please reduce the length of the messages or completion.", "context_length_exceeded",
                       "max_tokens")
    return min(wanted, context - len(ids))


def context_length(model) -> int | None:
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _generate(model, tokenizer, ids: list[int], params: dict,
              cancel: threading.Event) -> tuple[list[str], list[int], list[str]]:
    import torch
    from transformers import StoppingCriteriaList

    kwargs = _generation_kwargs(tokenizer, params)
    stops = list(params.get("stop") or []) + stop_strings(tokenizer)
    texts, counts, reasons = [], [], []
    with torch.inference_mode():
        for _ in range(params["n"]):
            out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 stopping_criteria=StoppingCriteriaList([Cancelled(cancel)]), **kwargs)[0, len(ids):]
            text, stopped = _cut(tokenizer.decode(out, skip_special_tokens=True), stops)
            ended = stopped or (len(out) and int(out[-1]) in stop_token_ids(tokenizer)) or len(out) < params["max_tokens"]
            texts.append(text)
            counts.append(int(len(out)))
            reasons.append("stop" if ended else "length")
    return texts, counts, reasons


def _stream_into(model, tokenizer, ids: list[int], params: dict, stream: Stream) -> None:
    """Generate into ``stream.streamer`` (called in the generating thread, with the lock held)."""
    import torch
    from transformers import StoppingCriteriaList

    kwargs = _generation_kwargs(tokenizer, params)
    with torch.inference_mode():
        model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                       streamer=stream.streamer, stopping_criteria=StoppingCriteriaList([Cancelled(stream.cancelled)]),
                       **kwargs)


def _cut_stream(pieces: Iterator[str], stops: list[str], stop_generating) -> Iterator[str]:
    """The pieces with the text from the first stop string on removed, holding back as many
    characters as the longest stop string could straddle; generation is stopped at a stop."""
    held = ""
    for piece in pieces:
        held += piece
        longest = max((len(s) for s in stops), default=0)
        cut, stopped = _cut(held, stops)
        if stopped:
            stop_generating()
            if cut:
                yield cut
            return
        if len(held) > longest:
            yield held[: len(held) - longest]
            held = held[len(held) - longest:]
    cut, _ = _cut(held, stops)
    if cut:
        yield cut
