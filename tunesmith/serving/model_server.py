"""Serving models: base models, fine-tuned runs and their checkpoints, by OpenAI model name.

Each base model is loaded once per engine (once more per other adapter type: DoRA, IA3, prompt
or prefix tuning, which peft cannot mix with plain LoRA in one batch or hold beside it). A LoRA
fine-tune is an adapter on it, so requests for different fine-tunes share the base without
reloading it; at most ``max_adapters`` stay loaded per base (least recently used is dropped, never
one in use). A fully fine-tuned run is its own model.

Engines (``serving/engines.py`` picks one per model): on transformers, concurrent requests on a
base are decoded together (``models/batching.py``: continuous batching, LoRA fine-tunes of one
base mixed in one batch; DoRA and IA3 one adapter per batch); prompt and prefix tuning take turns
under the model's lock through ``model.generate``; llama.cpp takes requests in turn, its GGUF
adapter switched per request; vLLM schedules them itself. A bounded admission count turns
overload into 429 + Retry-After, whatever the engine.

This module owns that state: the loaded models and their engines, admission and (for the serial
path) adapters. Loading is ``models/engine.py``'s (``load_model``, ``load_classifier``),
generating the engines', which names exist ``serving/names.py``'s.

A generation's admission (and, on the serial path, the model's lock) is released by the side that
generates, never by the client's stream: a client that goes away sets the request's cancel
event, generation stops at the next token and the slot is released there.
A prompt longer than the model's context is a 400 before anything is computed.
"""
from __future__ import annotations

import json
import shutil
import threading
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tunesmith.errors import APIError, TunesmithError, model_not_found
from tunesmith.models import engine
from tunesmith.models.batching import Adapter, BatchingEngine
from tunesmith.models.chat import ensure_chat_template, prompt_ids
from tunesmith.models.engine import Completion, Sampling, TextStream, TransformersEngine
from tunesmith.models.llama_cpp import LlamaCppEngine, llama_cpp_installed
from tunesmith.models.loading import load_tokenizer
from tunesmith.models.predict import predict_texts
from tunesmith.models.scoring import TokenScores
from tunesmith.models.store import ModelRef, resolve_model
from tunesmith.runs import Run
from tunesmith.serving.aliases import read_aliases, remove_alias
from tunesmith.serving.engines import GGUFFiles, check_engine, cuda_available, vllm_installed
from tunesmith.serving.names import JobCatalog, ModelNames, Target, named
from tunesmith.workspace import Workspace, is_safe_name

DEFAULT_MAX_TOKENS = 256  # when a request names none: a CPU server's answer, not the whole context

__all__ = ["BaseSlot", "ModelServer", "Target"]


# Adapter kinds whose forward is the base model's with changed layers: their requests are batched
# (LoRA ones mixed in one batch through peft's adapter_names; DoRA and IA3 one adapter per batch).
# Prompt and prefix tuning change the prompt and the cache instead: they go through model.generate,
# one request at a time.
BATCHED_KINDS = {"LORA": True, "DORA": False, "IA3": False}  # kind -> adapters mixed in one batch


@dataclass
class BaseSlot:
    """A loaded model and its engine. A ``BatchingEngine`` owns its adapters and its lock; for a
    ``TransformersEngine`` (prompt learning) requests take turns under ``lock`` and ``adapters``
    lists the adapters loaded on it. ``engine.model`` becomes a PeftModel at the first adapter."""

    engine: Any  # TransformersEngine (one request at a time), BatchingEngine, LlamaCppEngine, VLLMEngine
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: "OrderedDict[str, bool]" = field(default_factory=OrderedDict)  # loaded adapter names, LRU order

    @property
    def model(self):
        return self.engine.model

    @property
    def batched(self) -> bool:
        return isinstance(self.engine, BatchingEngine)

    @property
    def concurrent(self) -> bool:
        """The engine takes concurrent requests itself (and their adapters): all but the serial one."""
        return not isinstance(self.engine, TransformersEngine)

    def adapter_names(self) -> list[str]:
        """The adapters loaded on this model, least recently used first."""
        return [str(a) for a in (self.engine.adapters if self.concurrent else self.adapters)]

    def generating(self) -> int:
        if self.batched:
            return self.engine.active
        return int(self.engine.lock.locked() if self.concurrent else self.lock.locked())


class ModelServer:
    def __init__(self, workspace: Workspace, jobs: JobCatalog, max_adapters: int = 8, max_waiting: int = 16,
                 directories: dict[str, Path] | None = None, max_batch: int = 8, engine: str = "transformers",
                 log=print):
        check_engine(engine)
        self.workspace, self.jobs, self.max_adapters, self.max_batch = workspace, jobs, max_adapters, max_batch
        self.engine = engine
        self.gguf = GGUFFiles(workspace, log)
        self.names = ModelNames(workspace, jobs, directories)
        self.slots: dict[str, BaseSlot] = {}
        self.classifiers: dict[str, engine.LoadedClassifier] = {}
        self._loading = threading.Lock()
        self._waiting = threading.BoundedSemaphore(max_waiting)
        self.capacity = max_waiting

    # ── names ──────────────────────────────────────────────────────────────────────────────
    def targets(self, fresh: bool = False) -> list[Target]:
        """Every model name the server answers to (cached; ``fresh`` scans the home again)."""
        return self.names.targets(fresh)

    def forget(self) -> None:
        """Drop the name cache (after a delete, or a change this process made)."""
        self.names.forget()

    def resolve(self, name: str) -> Target:
        target = named(self.targets(), name)
        if target is None or not target.present():  # new since the last scan, or deleted since
            target = named(self.targets(fresh=True), name)
        if target is None:
            raise model_not_found(name)
        return target

    # ── deleting ───────────────────────────────────────────────────────────────────────────
    def delete(self, name: str) -> dict:
        """Delete a serving alias (the alias only), or a fine-tuned model's weights, a checkpoint or
        a pulled base model — unless other models depend on it (a 409 naming them)."""
        target = self.resolve(name)
        if target.alias_of is not None:
            remove_alias(self.workspace, name)
            self.forget()
            return {"id": name, "object": "model", "deleted": True}
        dependents = self.dependents(target, read_aliases(self.workspace))
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
                    if slot.batched:
                        slot.engine.close()  # its scheduler thread ends (after the rows it holds)
                    del self.slots[key]
                elif slot.batched:
                    slot.engine.drop_adapter(adapter)
                elif adapter in slot.adapters:
                    with slot.lock:
                        slot.adapters.pop(adapter)
                        slot.model.delete_adapter(adapter)

    # ── classifiers ────────────────────────────────────────────────────────────────────────
    def classify(self, run_ref: str, texts: list[str]) -> dict:
        """Labels and probabilities from a classify run (``tunesmith train`` with recipe: classify)."""
        # A run id (or an alias of one) only, looked up in the home: a request's string never becomes a path.
        run_id = read_aliases(self.workspace).get(run_ref, run_ref)
        run_id = self.jobs.run_of(run_id) or run_id  # the ft: name of a retraining job
        with self._loading:
            if run_id not in self.classifiers:
                run = Run(self.workspace.run_dir(run_id)) if is_safe_name(run_id) else None
                if run is None or not run.info_path.exists():
                    raise model_not_found(run_ref)
                try:
                    self.classifiers[run_id] = engine.load_classifier(run, self.workspace)
                except TunesmithError:
                    raise model_not_found(run_ref) from None
            classifier = self.classifiers[run_id]
        results = predict_texts(classifier, texts, top_k=len(classifier.labels))
        return {"object": "list", "model": run_ref, "data": [
            {"object": "classification", "index": i, "label": r["label"], "confidence": r["confidence"],
             "probabilities": {t["label"]: t["probability"] for t in r["top"]}} for i, r in enumerate(results)]}

    # ── loading ────────────────────────────────────────────────────────────────────────────
    def _slot(self, key: str, ref: ModelRef, kind: str = "LORA") -> BaseSlot:
        with self._loading:
            if key not in self.slots:
                loaded = engine.load_model(ref)
                if kind in BATCHED_KINDS and self.max_batch > 1:
                    self.slots[key] = BaseSlot(BatchingEngine(loaded.model, loaded.tokenizer, self.max_batch,
                                                              self.max_adapters, mixed_adapters=BATCHED_KINDS[kind]))
                else:  # one request at a time, unpadded
                    self.slots[key] = BaseSlot(loaded.engine(batch_size=1))
            return self.slots[key]

    # ── engines ────────────────────────────────────────────────────────────────────────────
    def engine_of(self, target: Target) -> str:
        """The engine that serves ``target`` (``/v1/models`` shows it); no model is loaded."""
        if self.engine == "vllm" or (self.engine == "auto" and cuda_available() and vllm_installed()):
            return "vllm"
        if self.engine == "llama.cpp" and self.gguf.servable(target):
            return "llama.cpp"
        if self.engine == "auto" and llama_cpp_installed() and self.gguf.found(target) is not None:
            return "llama.cpp"
        return "transformers"

    def _llama_slot(self, target: Target) -> tuple[BaseSlot, Path | None] | None:
        """The llama.cpp model for ``target`` (exported on first use) and its GGUF adapter; None
        when llama.cpp cannot serve it after all (the export failed: transformers serves it)."""
        model = self.gguf.prepare(target)
        if model is None:
            return None
        key = f"gguf:{self.gguf.identity(model.file)}"
        with self._loading:
            if key not in self.slots:
                tokenizer = load_tokenizer(ModelRef(target.name, model.tokenizer))
                ensure_chat_template(tokenizer)
                self.slots[key] = BaseSlot(LlamaCppEngine(model.file, tokenizer))
        return self.slots[key], model.adapter

    def _vllm_slot(self, target: Target) -> BaseSlot:
        from tunesmith.models.vllm import VLLMEngine

        key = f"vllm:{target.full_dir or target.base}"
        with self._loading:
            if key not in self.slots:
                model_dir = str(target.full_dir) if target.full_dir else resolve_model(target.base, self.workspace).path
                tokenizer = load_tokenizer(ModelRef(target.name, model_dir))
                ensure_chat_template(tokenizer)
                self.slots[key] = BaseSlot(VLLMEngine(model_dir, tokenizer, max_loras=self.max_adapters))
            return self.slots[key]

    def acquire(self, target: Target, scoring: bool = False) -> tuple[BaseSlot, Path | None]:
        """(slot, adapter directory or None) for a target: the adapter a concurrent engine takes per
        request (a GGUF file for llama.cpp), or the one the serial path activates.

        ``scoring``: the request wants token log-probabilities, which only the transformers engines
        give (models/scoring.py). Under ``--engine auto`` such a request goes to a transformers copy
        of the model even when llama.cpp serves its generation — so that lm-eval's
        ``local-completions`` works against a plain ``tunesmith serve``; an engine chosen by name
        (``--engine llama.cpp``) is kept, and ``complete`` refuses the request with a 400."""
        chosen = self.engine_of(target)
        if scoring and self.engine == "auto" and chosen == "llama.cpp":
            chosen = "transformers"
        if chosen == "llama.cpp":
            found = self._llama_slot(target)
            if found is not None:
                return found
        if chosen == "vllm":
            return self._vllm_slot(target), target.adapter_dir
        if target.full_dir is not None:
            return self._slot(f"full:{target.full_dir}", ModelRef(target.name, str(target.full_dir))), None
        # peft holds adapters of one type per model (LoRA and DoRA together; IA3 or prompt learning
        # cannot join them): each other type gets a base of its own. The base model itself shares LoRA's.
        kind = _adapter_kind(target.adapter_dir) if target.adapter_dir is not None else "LORA"
        key = target.base if kind == "LORA" else f"{target.base}|{kind}"
        return self._slot(key, resolve_model(target.base, self.workspace), kind), target.adapter_dir

    def _activate(self, slot: BaseSlot, name: str, adapter_dir: Path | None):
        """Select the adapter (loading it if needed, dropping the least recently used); called with the lock held."""
        from peft import PeftModel

        if adapter_dir is None:
            return slot.model.disable_adapter() if isinstance(slot.model, PeftModel) else nullcontext()
        key = _adapter_key(name)
        if not isinstance(slot.model, PeftModel):
            slot.engine.model = PeftModel.from_pretrained(slot.model, str(adapter_dir), adapter_name=key)
            slot.model.eval()
        elif key not in slot.adapters:
            slot.model.load_adapter(str(adapter_dir), adapter_name=key)
        slot.adapters[key] = True
        slot.adapters.move_to_end(key)
        while len(slot.adapters) > self.max_adapters:
            oldest, _ = slot.adapters.popitem(last=False)
            slot.model.delete_adapter(oldest)
        slot.model.set_adapter(key)
        return nullcontext()

    @staticmethod
    def _adapter_for(slot: BaseSlot, name: str, adapter: Path | None):
        """What the slot's engine takes as a request's adapter: a GGUF file for llama.cpp, a named
        peft (or vLLM LoRA) adapter for the others."""
        if adapter is None or isinstance(slot.engine, LlamaCppEngine):
            return adapter
        return Adapter(_adapter_key(name), adapter)

    def status(self) -> dict:
        """What an operator (or a load test) checks for leaks: requests admitted now, models loaded."""
        in_use = self.capacity - self._waiting._value  # noqa: SLF001 - a BoundedSemaphore keeps no public count
        return {"admitted": in_use, "capacity": self.capacity,
                "generating": sum(slot.generating() for slot in list(self.slots.values())),
                "models_loaded": sorted(self.slots),
                "adapters_loaded": sum(len(slot.adapter_names()) for slot in list(self.slots.values())),
                "classifiers_loaded": sorted(self.classifiers)}

    # ── generation ─────────────────────────────────────────────────────────────────────────
    def _admitted(self) -> threading.BoundedSemaphore:
        if not self._waiting.acquire(blocking=False):
            raise APIError(429, "The server is at capacity; retry shortly.", "rate_limit_exceeded",
                           type_="rate_limit_error", headers={"Retry-After": "2"})
        return self._waiting

    @contextmanager
    def _holding(self, slot: BaseSlot, name: str, adapter: Path | None, admitted) -> Iterator[None]:
        """What a generation holds while it runs: the model's lock with its adapter active, and its
        admission (released however the generation ends)."""
        try:
            with slot.lock, self._activate(slot, name, adapter):
                yield
        finally:
            admitted.release()

    def complete(self, name: str, messages: list[dict] | None, prompt: str | list | None, params: dict,
                 cancel: threading.Event | None = None) -> dict:
        """``n`` choices for the conversation, or for each prompt (prompt-major, as OpenAI orders them).
        A prompt is text or token ids. With ``params["logprobs"]`` (text completions; 0-5) each choice
        carries OpenAI's legacy ``logprobs`` object; ``echo`` puts the prompt before each choice (its
        tokens first in ``logprobs``, the first one's logprob null); ``max_tokens`` 0 with ``echo``
        scores the prompt and generates nothing (what lm-evaluation-harness asks for loglikelihoods)."""
        target = self.resolve(name)
        slot, adapter = self.acquire(target, scoring=params.get("logprobs") is not None)
        tokenizer = slot.engine.tokenizer
        asked = "messages" if messages is not None else "prompt"
        if messages is not None:
            prompts = [_prompt(tokenizer, messages, None)]
        else:
            prompts = [_prompt(tokenizer, None, p) for p in ([prompt] if isinstance(prompt, (str, type(None))) else prompt)]
        top_k, echo = params.get("logprobs"), bool(params.get("echo"))
        if top_k is not None and not hasattr(slot.engine, "score"):
            raise APIError(400, f"logprobs are not available on the {self.engine_of(target)} engine that serves "
                           f"'{name}'; serve it with `tunesmith serve --engine transformers` (or auto) to score tokens.",
                           "invalid_value", "logprobs")
        if top_k is not None:
            _check_ids(tokenizer, prompts)
        scoring_only = params.get("max_tokens") == 0
        samplings = [_sampling(params, 0 if scoring_only else _budget(slot.engine.context_length, ids, params, asked))
                     for ids in prompts]
        if scoring_only:
            _fits(slot.engine.context_length, prompts)

        def run() -> tuple[list[Completion], list | None]:
            if scoring_only:
                choices = [Completion("", 0, "length") for s in samplings for _ in range(s.n)]
            elif slot.concurrent:
                per_prompt = slot.engine.generate_each(list(zip(prompts, samplings)), cancel,
                                                       self._adapter_for(slot, target.name, adapter))
                choices = [c for completions in per_prompt for c in completions]
            else:
                choices = [c for ids, sampling in zip(prompts, samplings)
                           for c in slot.engine.generate([ids], sampling, cancel)[0]]
            if top_k is None:
                return choices, None
            owners = [ids for ids, s in zip(prompts, samplings) for _ in range(s.n)]
            sequences = [list(ids) + list(c.token_ids) for ids, c in zip(owners, choices)]
            if slot.batched:
                return choices, slot.engine.score(sequences, top_k, self._adapter_for(slot, target.name, adapter))
            return choices, slot.engine.score(sequences, top_k)

        if slot.concurrent:
            admitted = self._admitted()
            try:
                choices, scores = run()
            finally:
                admitted.release()
        else:
            with self._holding(slot, target.name, adapter, self._admitted()):
                choices, scores = run()
        texts = [c.text for c in choices]
        owners = [ids for ids, s in zip(prompts, samplings) for _ in range(s.n)]
        if echo:
            shown = [p for p, s in zip(_prompt_texts(tokenizer, prompt, prompts), samplings) for _ in range(s.n)]
            texts = [p + t for p, t in zip(shown, texts)]
        logprobs = None if scores is None else [
            legacy_logprobs(tokenizer, score, 0 if echo else len(ids)) for score, ids in zip(scores, owners)]
        return {"texts": texts, "completion_tokens": [c.tokens for c in choices],
                "finish_reasons": [c.finish_reason for c in choices], "prompt_tokens": sum(len(ids) for ids in prompts),
                "logprobs": logprobs}

    def stream(self, name: str, messages: list[dict] | None, prompt: str | None, params: dict) -> TextStream:
        """Text pieces of one completion, as they are generated (see the module docstring: the
        generating thread owns the lock and the admission slot; ``TextStream.cancel`` stops it)."""
        target = self.resolve(name)
        slot, adapter = self.acquire(target)
        ids = _prompt(slot.engine.tokenizer, messages, prompt)
        sampling = _sampling(params, _budget(slot.engine.context_length, ids, params,
                                             "messages" if messages is not None else "prompt"))
        admitted = self._admitted()
        try:
            if slot.concurrent:
                return slot.engine.stream(ids, sampling, hold=_releasing(admitted),
                                          adapter=self._adapter_for(slot, target.name, adapter))
            return slot.engine.stream(ids, sampling, hold=self._holding(slot, target.name, adapter, admitted))
        except BaseException:  # no generating thread started: nobody else will release the admission
            admitted.release()
            raise


def _adapter_kind(adapter_dir: Path) -> str:
    """LORA, DORA (LoRA with use_dora: peft cannot mix it in a batch), IA3, PROMPT_TUNING ..."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    kind = config.get("peft_type", "LORA")
    return "DORA" if kind == "LORA" and config.get("use_dora") else kind




@contextmanager
def _releasing(admitted) -> Iterator[None]:
    """A hold that releases the request's admission when its generation ends."""
    try:
        yield
    finally:
        admitted.release()


def _local_path(name: str) -> str | None:
    path = Path(name)
    return str(path.resolve()) if path.is_absolute() or path.exists() else None


def _adapter_key(name: str) -> str:
    return "a" + "".join(c if c.isalnum() else "_" for c in name)[-60:]


def _prompt(tokenizer, messages: list[dict] | None, prompt: str | list[int] | None) -> list[int]:
    if messages is not None:
        return prompt_ids(tokenizer, [{"role": m["role"], "content": _text(m.get("content"))} for m in messages])
    if isinstance(prompt, list):  # token ids (lm-evaluation-harness sends them with tokenized_requests)
        _check_ids(tokenizer, [prompt])
        return list(prompt)
    return tokenizer(prompt or "", add_special_tokens=True)["input_ids"]


def _check_ids(tokenizer, prompts: list[list[int]]) -> None:
    """Token ids the model has (a 400 naming ``prompt`` otherwise, never an index error in the model)."""
    vocabulary = len(tokenizer)
    for ids in prompts:
        bad = next((i for i in ids if not 0 <= i < vocabulary), None)
        if bad is not None:
            raise APIError(400, f"Invalid 'prompt': token id {bad} is not in this model's vocabulary "
                           f"(0-{vocabulary - 1}).", "invalid_value", "prompt")
    if any(len(ids) == 0 for ids in prompts):
        raise APIError(400, "Invalid 'prompt': an empty prompt has no tokens to score.", "invalid_value", "prompt")


def _fits(context: int | None, prompts: list[list[int]]) -> None:
    """A prompt scored without generating (``max_tokens`` 0) may fill the whole context, not more."""
    longest = max(len(ids) for ids in prompts)
    if context is not None and longest > context:
        raise APIError(400, f"This model's maximum context length is {context} tokens. However, your prompt "
                       f"resulted in {longest} tokens. Please reduce the length of the prompt.",
                       "context_length_exceeded", "prompt")


def _prompt_texts(tokenizer, prompt, prompts: list[list[int]]) -> list[str]:
    """What ``echo`` puts before each completion: the prompt as sent, or its token ids decoded."""
    sent = [prompt] if isinstance(prompt, (str, type(None))) else prompt
    return [p if isinstance(p, str) else tokenizer.decode(ids) for p, ids in zip(sent, prompts)]


def legacy_logprobs(tokenizer, score: TokenScores, start: int) -> dict:
    """OpenAI's legacy ``choices[i].logprobs`` for the tokens of ``score`` from ``start`` on (0 with
    ``echo``: the prompt's too): ``tokens``, ``token_logprobs`` (null for the sequence's first
    token), ``top_logprobs`` (the ``logprobs`` most likely tokens at each position and the chosen
    one, as OpenAI always includes it: up to ``logprobs`` + 1 entries) and ``text_offset``.

    Each token's string is that token decoded on its own, and ``text_offset`` their running length
    from the start of the echoed text (or of the completion): a character split across two byte
    tokens shows as a replacement character in each, as in OpenAI's own answers."""
    ids = score.token_ids[start:]
    tokens = tokenizer.batch_decode([[i] for i in ids]) if ids else []
    wanted = {i for top in score.top[start:] if top for i, _ in top}
    names = dict(zip(wanted, tokenizer.batch_decode([[i] for i in wanted]))) if wanted else {}
    tops: list[dict | None] = []
    for token, logprob, top in zip(tokens, score.logprobs[start:], score.top[start:]):
        if logprob is None:
            tops.append(None)
            continue
        entry: dict[str, float] = {}
        for i, value in top or []:
            entry.setdefault(names[i], value)  # two ids can decode alike: the likelier is kept
        entry.setdefault(token, logprob)
        tops.append(entry)
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return {"tokens": tokens, "token_logprobs": list(score.logprobs[start:]), "top_logprobs": tops,
            "text_offset": offsets}


def _text(content: Any) -> str:
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def _sampling(params: dict, max_new_tokens: int) -> Sampling:
    """A request's settings (``web/schemas.py``'s ``params()``) for the engine. OpenAI samples
    from the whole distribution: no top-k, ``top_p`` 1 unless asked."""
    top_p = params.get("top_p")
    return Sampling(max_new_tokens, temperature=params.get("temperature") or 0.0,
                    top_p=1.0 if top_p is None else top_p, top_k=0, n=params.get("n") or 1,
                    seed=params.get("seed"), stop=tuple(params.get("stop") or ()))


def _budget(context: int | None, ids: list[int], params: dict, param: str) -> int:
    """The tokens this request may generate: a prompt that leaves no room in the model's context
    is a 400 (``context_length_exceeded``, as OpenAI answers), and so is a ``max_tokens`` asked for
    explicitly beyond it; an implicit one is cut to what the context leaves."""
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
