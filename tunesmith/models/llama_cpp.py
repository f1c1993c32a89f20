"""Generating through llama.cpp (llama-cpp-python): the ``Engine`` for GGUF files on a CPU.

On a CPU, decoding reads every weight once per token: a quantised GGUF through llama.cpp's
kernels decodes SmolLM2-135M several times faster than transformers in fp32 (see
``docs/results/serve-throughput/``). tunesmith drives llama.cpp token by token
(``Llama.generate``), so prompts are the same token ids (the chat template applied by
``models/chat.py`` with the model's Hugging Face tokenizer, whose ids a converted GGUF keeps) and a
request ends exactly as on the other engines (``generation.ended``: stop tokens, stop strings,
cancel, ``max_new_tokens``).

One ``LlamaCppEngine`` is one GGUF model in memory and one llama.cpp context: requests take turns
under ``lock``, as in ``python -m llama_cpp.server``. LoRA adapters (GGUF, from ``tunesmith
export --format gguf-adapter``) are loaded on that model once and switched per request
(``llama_set_adapters_lora``); the prompt cache, which holds the previous request's KV, is dropped
at a switch, since it was computed with the other adapter.
"""
from __future__ import annotations

import ctypes
import os
import random
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Sequence

from tunesmith.errors import TunesmithError
from tunesmith.models.chat import stop_token_ids, stops_for
from tunesmith.models.generation import Completion, Sampling, TextStream, ended

MAX_CONTEXT = 8192  # llama.cpp allocates the whole KV cache up front: a 128k-context model would take GBs


def llama_cpp_installed() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


class LlamaCppEngine:
    """An ``Engine`` over one GGUF file. ``tokenizer`` is the model's Hugging Face tokenizer (chat
    template, stop tokens, detokenising); ``threads`` defaults to every core this process may use."""

    def __init__(self, gguf_file: Path, tokenizer, context: int | None = None, threads: int | None = None):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise TunesmithError("the llama.cpp engine needs llama-cpp-python: pip install 'tunesmith[gguf]' "
                                 "(or ./scripts/build-llama-cpp.sh, which builds and caches the wheel)") from None
        self.gguf_file, self.tokenizer = Path(gguf_file), tokenizer
        threads = threads or len(os.sched_getaffinity(0))
        trained = _trained_context(self.gguf_file)
        n_ctx = min(context or trained or MAX_CONTEXT, MAX_CONTEXT)
        self.llm = Llama(model_path=str(self.gguf_file), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                         n_batch=min(512, n_ctx), verbose=False)
        self.lock = threading.Lock()
        self.adapters: dict[Path, object] = {}
        self._active: Path | None = None
        self._stop_ids = set(stop_token_ids(tokenizer)) | {self.llm.token_eos()}

    @property
    def context_length(self) -> int | None:
        return self.llm.n_ctx()

    def generate(self, prompts: Sequence[list[int]], params: Sampling, cancel: threading.Event | None = None,
                 adapter: Path | None = None) -> list[list[Completion]]:
        return self.generate_each([(prompt, params) for prompt in prompts], cancel, adapter)

    def generate_each(self, requests: Sequence[tuple[list[int], Sampling]], cancel: threading.Event | None = None,
                      adapter: Path | None = None) -> list[list[Completion]]:
        """``n`` completions of each prompt, each with its own sampling; one request at a time."""
        cancel = cancel or threading.Event()
        with self.lock:
            self._use(adapter)
            results = []
            for prompt, params in requests:
                self._seed(params.seed)
                results.append([self._run(prompt, params, cancel) for _ in range(params.n)])
            return results

    def stream(self, prompt: list[int], params: Sampling, hold: AbstractContextManager | None = None,
               adapter: Path | None = None) -> TextStream:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=False, skip_special_tokens=True)
        text = TextStream(streamer, stops_for(self.tokenizer, params.stop), len(prompt))
        threading.Thread(target=self._stream_into, args=(text, streamer, prompt, params, hold or nullcontext(), adapter),
                         daemon=True, name="tunesmith llama.cpp").start()
        return text

    def _stream_into(self, text: TextStream, streamer, prompt, params, hold, adapter) -> None:
        completion, error = Completion("", 0, "stop"), None
        try:
            with hold, self.lock:
                if not text.cancelled.is_set():
                    self._use(adapter)
                    self._seed(params.seed)
                    completion = self._run(prompt, params, text.cancelled, streamer)
        except BaseException as e:  # noqa: BLE001 - raised to the reader of the stream, in its thread
            error = e
        finally:
            streamer.end()
            text.finish(completion, error)

    def _run(self, prompt: list[int], params: Sampling, cancel: threading.Event, streamer=None) -> Completion:
        """One completion, token by token; called with the lock held."""
        import torch

        stops, tokens = stops_for(self.tokenizer, params.stop), []
        greedy = params.temperature <= 0
        sampled = self.llm.generate(prompt, temp=0.0 if greedy else params.temperature, top_k=params.top_k or 0,
                                    top_p=1.0 if params.top_p is None else params.top_p, min_p=0.0, repeat_penalty=1.0)
        try:
            for token in sampled:
                tokens.append(int(token))
                if streamer is not None:
                    streamer.put(torch.tensor([token]))
                done = ended(self.tokenizer, tokens, self._stop_ids, stops, cancel.is_set(), params.max_new_tokens)
                if done is not None:
                    return done
            return ended(self.tokenizer, tokens, self._stop_ids, stops, True, params.max_new_tokens) or \
                Completion("", 0, "stop")
        finally:
            sampled.close()

    def _seed(self, seed: int | None) -> None:
        self.llm.set_seed(int(seed) if seed is not None else random.randrange(2**31))

    def _use(self, adapter: Path | None) -> None:
        """Make ``adapter`` (or none) the active LoRA; called with the lock held."""
        import llama_cpp

        if adapter == self._active:
            return
        handles = []
        if adapter is not None:
            if adapter not in self.adapters:
                handle = llama_cpp.llama_adapter_lora_init(self.llm.model, str(adapter).encode())
                if not handle:
                    raise TunesmithError(f"llama.cpp could not load the LoRA adapter {adapter}: is it a GGUF adapter "
                                         f"of {self.gguf_file.name}?")
                self.adapters[adapter] = handle
            handles = [self.adapters[adapter]]
        array = (llama_cpp.llama_adapter_lora_p_ctypes * max(1, len(handles)))(*handles)
        scales = (ctypes.c_float * max(1, len(handles)))(*([1.0] * len(handles)))
        if llama_cpp.llama_set_adapters_lora(self.llm.ctx, array, len(handles), scales):
            raise TunesmithError(f"llama.cpp could not switch to the LoRA adapter {adapter}")
        self.llm.reset()  # the cached prompt's KV was computed with the other adapter
        self._active = adapter


def _trained_context(gguf_file: Path) -> int | None:
    """The context the model was trained with, from the GGUF's metadata."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    reader = GGUFReader(str(gguf_file))
    for key, field in reader.fields.items():
        if key.endswith(".context_length"):
            return int(field.parts[field.data[0]][0])
    return None
