"""OpenAI's inference routes — ``/v1/chat/completions`` and ``/v1/completions``, blocking or
streamed (web/streaming.py) — and tunesmith's ``/v1/classifications``, all over the model
server (serving/model_server.py), which admits, queues or refuses each request (429 with
Retry-After).

Each request is written to the request log once, however it ends: the route makes its record
(id, model, input) first and keeps it on ``request.state.record``, so that a failure the error
handlers answer (web/errors.py) is logged with it; a client that disconnects is a 499."""
from __future__ import annotations

import threading
import time
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from tunesmith.data.formats import last_user_text
from tunesmith.errors import APIError
from tunesmith.jobs.request_log import RequestLog, new_request_id
from tunesmith.serving.model_server import ModelServer
from tunesmith.web import schemas
from tunesmith.web.bodies import JSONBody
from tunesmith.web.deps import LogDep, ModelsDep, principal
from tunesmith.web.streaming import Completion, completion_events, unless_disconnected

router = APIRouter(dependencies=[Depends(principal)])

ChatBody = Annotated[schemas.ChatCompletionRequest, Depends(JSONBody(schemas.ChatCompletionRequest))]
CompletionBody = Annotated[schemas.CompletionRequest, Depends(JSONBody(schemas.CompletionRequest))]
ClassificationBody = Annotated[schemas.ClassificationRequest, Depends(JSONBody(schemas.ClassificationRequest))]


@router.post("/v1/chat/completions", openapi_extra=schemas.openapi_body(schemas.ChatCompletionRequest))
async def chat_completions(request: Request, body: ChatBody, models: ModelsDep, log: LogDep):
    return await _completion(request, models, log, body, chat=True)


@router.post("/v1/completions", openapi_extra=schemas.openapi_body(schemas.CompletionRequest))
async def completions(request: Request, body: CompletionBody, models: ModelsDep, log: LogDep):
    return await _completion(request, models, log, body, chat=False)


@router.post("/v1/classifications", openapi_extra=schemas.openapi_body(schemas.ClassificationRequest))
async def classifications(request: Request, body: ClassificationBody, models: ModelsDep, log: LogDep):
    """tunesmith's own route (OpenAI has none): ``{"model": <classify run id>, "input": str | [str]}``
    → one ``{label, confidence, probabilities}`` per input."""
    texts, request_id, started = body.texts(), new_request_id("clf-"), time.perf_counter()
    record = request.state.record = partial(log.record, request_id, body.model, "classification", started=started,
                                            inputs=texts)
    result = await run_in_threadpool(models.classify, body.model, texts)
    labels = [(item["label"], item["confidence"]) for item in result["data"]]
    await run_in_threadpool(record, status=200, labels=labels)
    return {"id": request_id, **result}


async def _completion(request: Request, models: ModelServer, log: RequestLog, body, chat: bool):
    """A chat (``body.conversation()``) or text (``body.prompts()``) completion, streamed or not."""
    completion_id = new_request_id("chatcmpl-" if chat else "cmpl-")
    started, created = time.perf_counter(), int(time.time())
    messages = body.conversation() if chat else None
    prompt = None if chat else body.prompts()
    record = partial(log.record, completion_id, body.model, "chat" if chat else "completion", started=started,
                     inputs=[last_user_text(messages) if chat else _logged(prompt[0])])
    request.state.record = record  # what the error handlers log a failure with
    completion = Completion(completion_id, created, body.model, chat)
    if body.stream:
        return await _streamed(models, body, messages, prompt, completion, record)
    cancel = threading.Event()
    params = body.params()
    result = await unless_disconnected(request, cancel, models.complete, body.model, messages, prompt, params, cancel)
    if result is None:  # the client went away: generation stopped, nothing to answer
        await run_in_threadpool(record, status=499, error="client disconnected")
        return JSONResponse({}, status_code=499)
    await run_in_threadpool(record, status=200, prompt_tokens=result["prompt_tokens"],
                            completion_tokens=sum(result["completion_tokens"]), output=result["texts"][0])
    return _completion_object(result, completion)


async def _streamed(models: ModelServer, body, messages: list[dict] | None, prompt: list[str] | None,
                    completion: Completion, record) -> StreamingResponse:
    """One choice of one prompt, as server-sent events (OpenAI streams n > 1 interleaved; not here)."""
    params = body.params()
    if params["n"] != 1:
        raise APIError(400, "Streaming supports n=1 only.", "invalid_value", "n")
    for field in ("logprobs", "echo"):  # lm-evaluation-harness and OpenAI's SDK score without streaming
        if not completion.chat and params[field] not in (None, False):
            raise APIError(400, f"Streaming does not support {field}; send the request with stream: false.",
                           "invalid_value", field)
    if not completion.chat and len(prompt) != 1:
        raise APIError(400, "Streaming supports one prompt only.", "invalid_value", "prompt")
    stream = await run_in_threadpool(models.stream, body.model, messages, None if completion.chat else prompt[0], params)
    usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(completion_events(stream, completion, record, usage), media_type="text/event-stream")


def _logged(prompt: str | list[int]) -> str:
    return prompt if isinstance(prompt, str) else f"<{len(prompt)} token ids> {prompt[:64]}"


def _completion_object(result: dict, completion: Completion) -> dict:
    """The answer to a blocking completion: one choice per text, with the token counts (and, for a
    text completion that asked for them, OpenAI's legacy logprobs)."""
    choices = []
    logprobs = result.get("logprobs") or [None] * len(result["texts"])
    for i, (text, reason) in enumerate(zip(result["texts"], result["finish_reasons"])):
        if completion.chat:
            choices.append({"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                            "finish_reason": reason, "logprobs": None})
        else:
            choices.append({"index": i, "text": text, "finish_reason": reason, "logprobs": logprobs[i]})
    completion_tokens = sum(result["completion_tokens"])
    return {"id": completion.id, "object": "chat.completion" if completion.chat else "text_completion",
            "created": completion.created, "model": completion.model, "choices": choices, "system_fingerprint": None,
            "usage": {"prompt_tokens": result["prompt_tokens"], "completion_tokens": completion_tokens,
                      "total_tokens": result["prompt_tokens"] + completion_tokens}}

