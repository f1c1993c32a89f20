"""Generating text from token ids: the ``Engine`` interface, and its transformers implementation.

Everything that generates goes through an ``Engine``: evaluation and labelling (batched, via the
conversation-level helpers in ``models/engine.py``) and the server. An engine takes prompts as
token ids (the chat template is applied before, by ``models/chat.py``) and a ``Sampling``; it
returns ``Completion``s, or a ``TextStream`` whose pieces arrive as they are generated. That is
all a caller may rely on. The server's engines (continuous batching on transformers in
``models/batching.py``, llama.cpp, vLLM) sit behind the same two methods and end each request by
``ended`` below, so stops and token counts are the same on every engine.

``TransformersEngine`` calls ``model.generate``. Its invariants:

- Stops: a stop token (eos, ChatML's end marker), a stop string (the request's own, then the
  template's when it is plain text in the vocabulary), a cancel event (a client gone: generation
  stops at the next token), or ``max_new_tokens``. The stop string itself is never returned.
- Counts: ``Completion.tokens`` is the tokens generated, the one that ended it included. In a
  batch a finished row is padded, often with eos itself, so each row's end is recorded as it
  happens (``_Ends``) instead of being guessed from the padded output.
- Seeds: ``Sampling.seed`` seeds torch once per batch before its ``n`` rounds, so a batch of
  one prompt (the server's) gives the same choices for the same seed, whatever else is asked.
- Batches: prompts are sorted by length and left-padded, ``batch_size`` at a time.
"""
from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol, Sequence

from tunesmith.models.chat import cut_at_stop, cut_stream, stop_token_ids, stops_for
from tunesmith.models.scoring import TokenScores, token_logprobs


@dataclass(frozen=True)
class Sampling:
    """How a completion's tokens are chosen. ``temperature`` 0 is greedy decoding. ``top_p`` and
    ``top_k`` None leave the model's own generation defaults; ``top_k`` 0 turns top-k off."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    n: int = 1                       # choices per prompt
    seed: int | None = None
    stop: tuple[str, ...] = ()       # stop strings besides the chat template's end of turn


@dataclass(frozen=True)
class Completion:
    text: str            # special tokens skipped, cut before the first stop string; whitespace kept
    tokens: int          # tokens generated, the one that ended it included
    finish_reason: str   # "stop" (a stop token or string, or cancelled) or "length" (max_new_tokens)
    token_ids: tuple[int, ...] = ()  # the tokens generated (``tokens`` of them; what logprobs are scored on)


class TextStream:
    """One completion's text, piece by piece as another thread generates it. Text that could be
    the start of a stop string is held back until it cannot; at a stop string generation is
    cancelled. ``cancel()`` (a client that disconnected) stops it within a token. Once iterated to
    the end, ``completion_tokens`` is known and an error in the generating thread is raised."""

    def __init__(self, pieces: Iterable[str], stops: list[str], prompt_tokens: int):
        self.prompt_tokens = prompt_tokens
        self.cancelled, self.finished = threading.Event(), threading.Event()
        self.completion: Completion | None = None
        self.error: BaseException | None = None
        self._pieces, self._stops, self._sent = pieces, stops, []

    def __iter__(self) -> Iterator[str]:
        for piece in cut_stream(self._pieces, self._stops, self.cancel):
            self._sent.append(piece)
            yield piece
        self.finished.wait()
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        self.cancelled.set()

    def finish(self, completion: Completion, error: BaseException | None = None) -> None:
        """Called by the generating thread, however generation ended."""
        self.completion, self.error = completion, error
        self.finished.set()

    @property
    def text(self) -> str:
        """What was handed out so far."""
        return "".join(self._sent)

    @property
    def completion_tokens(self) -> int | None:
        return self.completion.tokens if self.finished.is_set() and self.completion else None


class Engine(Protocol):
    """What callers of a generation back-end may rely on."""

    @property
    def context_length(self) -> int | None:
        """The most tokens (prompt + completion) the model takes; None when it does not say."""

    def generate(self, prompts: Sequence[list[int]], params: Sampling,
                 cancel: threading.Event | None = None) -> list[list[Completion]]:
        """``params.n`` completions for each prompt, in the prompts' order."""

    def stream(self, prompt: list[int], params: Sampling,
               hold: AbstractContextManager | None = None) -> TextStream:
        """One completion of ``prompt`` as it is generated. ``hold`` is entered by the generating
        side around the generation and left however it ends (the server's model lock and
        admission slot), so a client that walks away cannot keep it."""


@dataclass
class TransformersEngine:
    """An ``Engine`` over a transformers (or peft) model and its tokenizer. ``model`` may be
    replaced between calls (the server wraps its base in a PeftModel for adapters)."""

    model: Any
    tokenizer: Any
    batch_size: int = 8

    @property
    def context_length(self) -> int | None:
        return context_length(self.model)

    def generate(self, prompts: Sequence[list[int]], params: Sampling,
                 cancel: threading.Event | None = None) -> list[list[Completion]]:
        cancel = cancel or threading.Event()
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        choices: list[list[Completion]] = [[] for _ in prompts]
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            _seed(params.seed)
            for _ in range(params.n):
                for i, completion in zip(batch, self._run([prompts[i] for i in batch], params, cancel)):
                    choices[i].append(completion)
        return choices

    def score(self, sequences: Sequence[list[int]], top_k: int = 0) -> list[TokenScores]:
        """Each token's logprob and the top ``top_k`` at each position (``models/scoring.py``), with
        whatever adapter the caller made active."""
        return token_logprobs(self.model, sequences, top_k, _pad_id(self.tokenizer), self.batch_size)

    def stream(self, prompt: list[int], params: Sampling,
               hold: AbstractContextManager | None = None) -> TextStream:
        """One completion (``params.n`` is not used), generated in a thread of its own."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        text = TextStream(streamer, stops_for(self.tokenizer, params.stop), len(prompt))
        threading.Thread(target=self._stream_into, args=(text, streamer, prompt, params, hold or nullcontext()),
                         daemon=True, name="tunesmith generate").start()
        return text

    def _stream_into(self, text: TextStream, streamer, prompt: list[int], params: Sampling,
                     hold: AbstractContextManager) -> None:
        completion, error = Completion("", 0, "stop"), None
        try:
            with hold:
                if not text.cancelled.is_set():  # else the client left while it waited for the model
                    _seed(params.seed)
                    completion = self._run([prompt], params, text.cancelled, streamer)[0]
        except BaseException as e:  # noqa: BLE001 - raised to the reader of the stream, in its thread
            error = e
        finally:
            streamer.end()  # a failed generate never ended it: the reader would wait for ever
            text.finish(completion, error)

    def _run(self, rows: list[list[int]], params: Sampling, cancel: threading.Event,
             streamer=None) -> list[Completion]:
        """One ``model.generate`` over ``rows`` (left-padded): a completion per row."""
        import torch
        from transformers import StoppingCriteriaList

        tokenizer, width = self.tokenizer, max(len(row) for row in rows)
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(row)) + row for row in rows])
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
        stops = stops_for(tokenizer, params.stop)
        ends = _Ends(tokenizer, stops, stop_token_ids(tokenizer), cancel, len(rows))
        extra = {"streamer": streamer} if streamer is not None else {}
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, stopping_criteria=StoppingCriteriaList([ends]),
                                      **_generation_kwargs(tokenizer, params), **extra)
        return [_completion(tokenizer, out[i, width:], ends.ended[i], stops, params.max_new_tokens)
                for i in range(len(rows))]


class _Ends:
    """A stopping criterion (transformers calls it after every token): a row ends at a stop token
    or a stop string (transformers' own ``StopStringCriteria``, as ``generate(stop_strings=...)``
    would build it), all rows at the cancel event. ``ended[row]`` is the step it ended at."""

    def __init__(self, tokenizer, stops: list[str], stop_ids: list[int], cancel: threading.Event, rows: int):
        import torch
        from transformers import StopStringCriteria

        self.strings = StopStringCriteria(tokenizer, stops) if stops else None
        self.stop_ids, self.cancel = torch.tensor(stop_ids, dtype=torch.long), cancel
        self.steps, self.ended = 0, [None] * rows

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.steps += 1
        done = torch.isin(input_ids[:, -1], self.stop_ids.to(input_ids.device))
        if self.strings is not None:
            done = done | self.strings(input_ids, scores)
        for row in done.nonzero().flatten().tolist():
            if self.ended[row] is None:
                self.ended[row] = self.steps
        return done | self.cancel.is_set()


def _generation_kwargs(tokenizer, params: Sampling) -> dict[str, Any]:
    """``model.generate``'s arguments for ``params`` (stops and cancel travel in ``_Ends``)."""
    kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "eos_token_id": stop_token_ids(tokenizer),
                              "pad_token_id": tokenizer.pad_token_id}
    if params.temperature <= 0:  # sampling settings unset: transformers warns about them when greedy
        return kwargs | {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    kwargs |= {"do_sample": True, "temperature": params.temperature}
    if params.top_p is not None:
        kwargs["top_p"] = params.top_p
    if params.top_k is not None:
        kwargs["top_k"] = params.top_k or None  # transformers' "no top-k" is None
    return kwargs


def _completion(tokenizer, row, ended_at: int | None, stops: list[str], max_new_tokens: int) -> Completion:
    text, stopped = cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), stops)
    tokens = ended_at or len(row)  # a row that never ended ran to the batch's last step
    ended = stopped or ended_at is not None or tokens < max_new_tokens
    return Completion(text, int(tokens), "stop" if ended else "length", tuple(row[:tokens].tolist()))


def ended(tokenizer, tokens: list[int], stop_ids, stops: list[str], cancelled: bool,
          max_new_tokens: int) -> Completion | None:
    """The completion of a generation that produces ``tokens`` one at a time, once it has ended
    (its last token a stop token, a stop string in its text, cancelled, or ``max_new_tokens``
    reached); None while it goes on. The engines that drive decoding themselves (batching,
    llama.cpp) end their requests by this, as ``TransformersEngine`` does through ``_Ends``."""
    if not tokens:
        return Completion("", 0, "stop") if cancelled else None
    text = None
    stopped = tokens[-1] in stop_ids or cancelled
    if not stopped and stops:
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        stopped = any(stop in text for stop in stops)
    if not stopped and len(tokens) < max_new_tokens:
        return None
    text = text if text is not None else tokenizer.decode(tokens, skip_special_tokens=True)
    text, cut = cut_at_stop(text, stops)
    return Completion(text, len(tokens), "stop" if stopped or cut else "length", tuple(tokens))


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _seed(seed: int | None) -> None:
    if seed is not None:
        import torch

        torch.manual_seed(int(seed))


def context_length(model) -> int | None:
    """The model's context in tokens, from its config; None when it names none."""
    return config_context_length(getattr(model, "config", None))


def config_context_length(config) -> int | None:
    """The context in tokens a model config names (a transformers config); None when it names none."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
