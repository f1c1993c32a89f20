"""A generation while its client is connected: a streamed completion as server-sent events
(OpenAI's chunk objects, then ``data: [DONE]``), and a blocking one watched for a disconnect.

Either way, a client that goes away stops the generation within a token, and the request is
logged however it ended; the generating thread then releases the model and its admission slot
itself (serving/model_server.py)."""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from fastapi import Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool

from tunesmith.errors import APIError

DONE = "data: [DONE]\n\n"


def event(payload: dict) -> str:
    return "data: " + json.dumps(payload) + "\n\n"


@dataclass(frozen=True)
class Completion:
    """What every answer and chunk of one completion carries, and its chunks as events."""
    id: str
    created: int
    model: str
    chat: bool

    def chunk(self, delta: dict | str, finish: str | None) -> str:
        if self.chat:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None}
        return event(self._header() | {"choices": [choice]})

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int | None) -> str:
        """``stream_options.include_usage``: a last chunk with no choices and the token counts."""
        counts = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + (completion_tokens or 0)}
        return event(self._header() | {"choices": [], "usage": counts})

    def _header(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.model}


async def completion_events(stream, completion: Completion, record: Callable[..., None], usage: bool = False
                            ) -> AsyncIterator[str]:
    """``stream`` (the model server's token stream) as server-sent events. However it ends —
    finished, failed, or the client gone (the task is cancelled, or a write fails) — the
    generation is cancelled and ``record`` logs the request."""
    outcome: dict[str, Any] = {"status": 499, "error": "client disconnected"}
    try:
        if completion.chat:
            yield completion.chunk({"role": "assistant", "content": ""}, None)
        try:
            async for piece in iterate_in_threadpool(stream):
                yield completion.chunk({"content": piece} if completion.chat else piece, None)
        except Exception as e:  # noqa: BLE001 - the status line has gone out: report in the stream, as OpenAI does
            print(f"tunesmith: error while streaming {completion.id}:\n{traceback.format_exc()}", file=sys.stderr)
            outcome = {"status": 500, "error": str(e)[:2000]}
            yield event(APIError(500, "The server had an error while generating.", "server_error",
                                 type_="server_error").body())
            return
        outcome = {"status": 200, "prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.completion_tokens}
        yield completion.chunk({} if completion.chat else "", "stop")
        if usage:
            yield completion.usage_chunk(stream.prompt_tokens, stream.completion_tokens)
        yield DONE
    finally:
        stream.cancel()  # no await here: a cancelled task cannot await; the log is written by a thread
        threading.Thread(target=record, kwargs=outcome | {"output": stream.text}, daemon=True).start()


async def unless_disconnected(request: Request, cancel: threading.Event, work: Callable, *args):
    """``work(*args)`` in a thread, watching the client: if it disconnects, ``cancel`` is set
    (generation stops within a token) and None is returned once the thread is done."""
    task = asyncio.ensure_future(run_in_threadpool(work, *args))
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if done:
            return None if cancel.is_set() else task.result()
        if not cancel.is_set() and await request.is_disconnected():
            cancel.set()
