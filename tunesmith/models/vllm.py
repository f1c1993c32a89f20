"""Generating through vLLM on CUDA: the ``Engine`` for GPU serving.

vLLM batches continuously and serves many LoRA adapters of one base in one batch (``LoRARequest``
per request, ``enable_lora``): what tunesmith's server routes to when a GPU and vllm are there
(``tunesmith serve --engine vllm``, or ``auto``). Prompts are token ids (``TokensPrompt``), the chat
template applied by ``models/chat.py`` as for the other engines, and a request ends by
``generation.ended`` on the tokens vLLM streams back, so stops and counts are the same everywhere.

The async engine runs in an event loop on a thread of its own; each request is a coroutine
submitted to it, and its tokens come back through a queue. A request cancelled (a client gone)
is aborted in vLLM at once.
"""
from __future__ import annotations

import asyncio
import itertools
import threading
from contextlib import AbstractContextManager, nullcontext
from typing import Sequence

from tunesmith.errors import TunesmithError
from tunesmith.models.chat import stop_token_ids, stops_for
from tunesmith.models.generation import Completion, Sampling, TextStream, ended


class VLLMEngine:
    """An ``Engine`` over vLLM's ``AsyncLLMEngine`` for one base model (a Hugging Face directory)."""

    def __init__(self, model_dir: str, tokenizer, max_loras: int = 8, max_lora_rank: int = 64):
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError:
            raise TunesmithError("the vllm engine needs vllm (pip install vllm) and a CUDA GPU") from None
        self.tokenizer = tokenizer
        self.adapters: dict[str, int] = {}
        self.lock = threading.Lock()  # no request takes it: vLLM schedules them; status() reads it
        self._ids = itertools.count(1)
        self._stop_ids = stop_token_ids(tokenizer)
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True, name="tunesmith vllm").start()
        args = AsyncEngineArgs(model=model_dir, tokenizer=model_dir, enable_lora=True, max_loras=max_loras,
                               max_lora_rank=max_lora_rank, dtype="auto")
        self.vllm = AsyncLLMEngine.from_engine_args(args)
        self._context = int(getattr(self.vllm, "model_config", None) and self.vllm.model_config.max_model_len or 0) or None

    @property
    def context_length(self) -> int | None:
        return self._context

    def generate(self, prompts: Sequence[list[int]], params: Sampling, cancel=None, adapter=None) -> list[list[Completion]]:
        return self.generate_each([(prompt, params) for prompt in prompts], cancel, adapter)

    def generate_each(self, requests, cancel: threading.Event | None = None, adapter=None) -> list[list[Completion]]:
        cancel = cancel or threading.Event()
        futures = [[asyncio.run_coroutine_threadsafe(self._one(prompt, params, cancel, None, adapter, i), self._loop)
                    for i in range(params.n)] for prompt, params in requests]
        return [[future.result() for future in per_prompt] for per_prompt in futures]

    def stream(self, prompt: list[int], params: Sampling, hold: AbstractContextManager | None = None,
               adapter=None) -> TextStream:
        from transformers import TextIteratorStreamer

        hold = hold or nullcontext()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=False, skip_special_tokens=True)
        text = TextStream(streamer, stops_for(self.tokenizer, params.stop), len(prompt))
        hold.__enter__()
        future = asyncio.run_coroutine_threadsafe(self._one(prompt, params, text.cancelled, streamer, adapter, 0),
                                                  self._loop)

        def finished(done) -> None:
            try:
                error = done.exception()
                streamer.end()
                text.finish(done.result() if error is None else Completion("", 0, "stop"), error)
            finally:
                hold.__exit__(None, None, None)

        future.add_done_callback(finished)
        return text

    async def _one(self, prompt, params: Sampling, cancel: threading.Event, streamer, adapter, choice: int) -> Completion:
        import torch
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        request_id = f"tunesmith-{next(self._ids)}"
        seed = None if params.seed is None else int(params.seed) + choice
        sampling = SamplingParams(max_tokens=params.max_new_tokens, temperature=max(params.temperature, 0.0),
                                  top_p=1.0 if params.top_p is None else params.top_p, top_k=params.top_k or -1,
                                  seed=seed, stop_token_ids=list(self._stop_ids), detokenize=False)
        stops, tokens = stops_for(self.tokenizer, params.stop), []
        outputs = self.vllm.generate(TokensPrompt(prompt_token_ids=prompt), sampling, request_id,
                                     lora_request=self._lora(adapter))
        async for output in outputs:
            new = list(output.outputs[0].token_ids)[len(tokens):]
            for token in new:
                tokens.append(int(token))
                if streamer is not None:
                    streamer.put(torch.tensor([token]))
                done = ended(self.tokenizer, tokens, self._stop_ids, stops, cancel.is_set(), params.max_new_tokens)
                if done is not None:
                    await self.vllm.abort(request_id)
                    return done
        return ended(self.tokenizer, tokens, self._stop_ids, stops, True, params.max_new_tokens) or Completion("", 0, "stop")

    def _lora(self, adapter):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        number = self.adapters.setdefault(adapter.key, len(self.adapters) + 1)
        return LoRARequest(adapter.key, number, str(adapter.path))

