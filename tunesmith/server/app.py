"""The HTTP layer (FastAPI) under ``/v1``: OpenAI's routes and shapes over server/files.py,
server/jobs.py and server/inference.py. Every route needs a valid API key (Bearer), unless the
server was started explicitly without keys for localhost development."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from tunesmith.server import jobs as job_service
from tunesmith.server.db import Database
from tunesmith.server.errors import APIError
from tunesmith.server.files import FileStore
from tunesmith.server.inference import ModelServer
from tunesmith.server.keys import verify
from tunesmith.data.formats import last_user_text
from tunesmith.server.request_log import LogSettings, RequestLog, new_request_id
from tunesmith.server.ui import mount_ui
from tunesmith.workspace import Workspace

DEFAULT_UPLOAD_LIMIT = 512 * 1024 * 1024  # OpenAI's per-file limit


@dataclass
class ServerSettings:
    require_keys: bool = True
    max_upload_bytes: int = DEFAULT_UPLOAD_LIMIT
    cors_origins: tuple[str, ...] = ()
    max_adapters: int = 8
    max_waiting: int = 16
    request_log: LogSettings = LogSettings()


def create_app(workspace: Workspace, settings: ServerSettings | None = None, db: Database | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    db = db or Database.for_workspace(workspace)
    files = FileStore(db, workspace.home / "files", settings.max_upload_bytes)
    models = ModelServer(workspace, db, settings.max_adapters, settings.max_waiting)
    log = RequestLog(db, settings.request_log)
    app = FastAPI(title="tunesmith", version="1", docs_url="/docs", openapi_url="/openapi.json")
    app.state.db, app.state.models = db, models
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    def authorised(request: Request) -> None:
        if not settings.require_keys:
            return
        header = request.headers.get("authorization", "")
        secret = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not secret or not verify(db, secret):
            raise APIError(401, "Incorrect API key provided." if secret else "Missing API key (Authorization: Bearer ...).",
                           "invalid_api_key", type_="invalid_request_error")

    v1 = Depends(authorised)
    mount_ui(app)

    # ── files ──────────────────────────────────────────────────────────────────────────────
    @app.post("/v1/files", dependencies=[v1])
    async def create_file(request: Request):
        return await _multipart_upload(request, files)

    @app.get("/v1/files", dependencies=[v1])
    def list_files(purpose: str | None = None, limit: int = 10000, after: str | None = None, order: str = "desc"):
        data, more = files.list(purpose, max(1, min(limit, 10000)), after, order)
        return _page(data, more)

    @app.get("/v1/files/{file_id}", dependencies=[v1])
    def retrieve_file(file_id: str):
        from tunesmith.server.files import file_object
        return file_object(files.get(file_id))

    @app.get("/v1/files/{file_id}/card", dependencies=[v1])
    def file_card(file_id: str, model: str | None = None, max_length: int = 1024):
        """tunesmith's own: the dataset card of an uploaded file (counts, token lengths under a
        base model the server has, labels, personal data found), or its problems."""
        from tunesmith import api

        row = files.get(file_id)
        if model is not None and model not in {t.name for t in models.targets() if t.owned_by == "system"}:
            raise APIError(404, f"The model '{model}' does not exist", "model_not_found", "model")
        report, card = api.check_data(files.path(row.id), model=model, max_length=max(16, min(max_length, 131072)),
                                      workspace=workspace)
        problems = report.summary(limit=50).replace(str(files.path(row.id)), row.filename).splitlines()
        card_dict = card.to_dict() | {"path": row.filename} if card else None
        return {"file_id": row.id, "filename": row.filename, "valid": report.ok, "problems": [] if report.ok else problems,
                "card": card_dict}

    # ── review (tunesmith's own): ratings and corrections that become the next dataset ──────
    @app.post("/v1/tunesmith/feedback", dependencies=[v1])
    async def add_feedback(request: Request):
        from tunesmith.server import feedback
        return feedback.add(db, await _json(request))

    @app.get("/v1/tunesmith/feedback", dependencies=[v1])
    def list_feedback(status: str | None = None):
        from tunesmith.server import feedback
        return _page(feedback.list_items(db, status), False)

    @app.post("/v1/tunesmith/feedback/export", dependencies=[v1])
    def export_feedback():
        from tunesmith.server import feedback
        return feedback.export(db, files)

    @app.post("/v1/tunesmith/feedback/{feedback_id}", dependencies=[v1])
    async def update_feedback(feedback_id: str, request: Request):
        from tunesmith.server import feedback
        return feedback.update(db, feedback_id, await _json(request))

    # ── runs and evaluations (tunesmith's own): every run, CLI-trained ones too ────────────
    @app.get("/v1/tunesmith/runs", dependencies=[v1])
    def list_runs():
        from tunesmith.server import evaluations
        return _page(evaluations.list_runs(workspace, db), False)

    @app.get("/v1/tunesmith/runs/{run_id}", dependencies=[v1])
    def retrieve_run(run_id: str):
        from tunesmith.server import evaluations
        return evaluations.run_object(workspace, db, run_id)

    @app.get("/v1/tunesmith/runs/{run_id}/evaluation", dependencies=[v1])
    def run_evaluation(run_id: str):
        from tunesmith.server import evaluations
        return evaluations.evaluation(workspace, run_id)

    @app.post("/v1/tunesmith/runs/{run_id}/evaluation", dependencies=[v1])
    async def start_evaluation(run_id: str, request: Request):
        from tunesmith.server import evaluations
        return evaluations.start(workspace, files, run_id, await _json(request))

    @app.get("/v1/tunesmith/runs/{run_id}/evaluation/report.html", dependencies=[v1])
    def evaluation_page(run_id: str):
        from fastapi.responses import HTMLResponse

        from tunesmith.server import evaluations
        # Shown in a sandboxed frame by the UI; the page has no scripts and loads nothing.
        return HTMLResponse(evaluations.report_html(workspace, run_id),
                            headers={"Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'"})

    @app.get("/v1/tunesmith/compare", dependencies=[v1])
    def compare_runs(runs: list[str] = Query(default=[])):
        from tunesmith.server import evaluations
        return evaluations.compare(workspace, runs)

    @app.get("/v1/tunesmith/schema/{recipe}", dependencies=[v1])
    def recipe_schema(recipe: str):
        """tunesmith's own: the JSON schema of a recipe's settings (types, ranges, defaults,
        descriptions), from which the web UI builds its run form."""
        from tunesmith.config import recipe_schema as schema_of

        found = schema_of(recipe)
        if found is None:
            raise APIError(404, f"no recipe '{recipe}' (sft, classify, dpo)", "not_found", "recipe")
        return found

    @app.post("/v1/files/{file_id}/clean", dependencies=[v1])
    async def clean_file(file_id: str, request: Request):
        """tunesmith's own: `data clean` on an uploaded file; the cleaned file and its rejects are new files."""
        from starlette.concurrency import run_in_threadpool

        from tunesmith.server import prepare
        return await run_in_threadpool(prepare.clean, files, file_id, await _json(request))

    @app.post("/v1/files/{file_id}/split", dependencies=[v1])
    async def split_file(file_id: str, request: Request):
        """tunesmith's own: `data split` on an uploaded file; each split is a new file."""
        from starlette.concurrency import run_in_threadpool

        from tunesmith.server import prepare
        return await run_in_threadpool(prepare.split, files, file_id, await _json(request))

    @app.get("/v1/files/{file_id}/content", dependencies=[v1])
    def file_content(file_id: str):
        row = files.get(file_id)
        return FileResponse(files.path(row.id), media_type="application/octet-stream", filename=row.filename)

    @app.delete("/v1/files/{file_id}", dependencies=[v1])
    def delete_file(file_id: str):
        return files.delete(file_id)

    # ── fine-tuning jobs ───────────────────────────────────────────────────────────────────
    @app.post("/v1/fine_tuning/jobs", dependencies=[v1])
    async def create_job(request: Request):
        body = await _json(request)
        # Only models the server already has: a name from the request never becomes a path.
        bases = {t.name for t in await run_in_threadpool(models.targets) if t.is_base}
        if body.get("model") not in bases:
            raise APIError(400, f"Model {body.get('model')!r} is not available for fine-tuning; available: "
                           f"{', '.join(sorted(bases)) or 'none (pull one with `tunesmith models pull`)'}.",
                           "model_not_available", "model")
        await run_in_threadpool(files.require_examples, body.get("training_file"), "training_file")
        return await run_in_threadpool(job_service.create_job, db, body)

    @app.get("/v1/fine_tuning/jobs", dependencies=[v1])
    def list_jobs(request: Request, after: str | None = None, limit: int = 20):
        metadata = {k[9:-1]: v for k, v in request.query_params.items() if k.startswith("metadata[")}
        data, more = job_service.list_jobs(db, after, max(1, min(limit, 100)), metadata)
        return _page(data, more)

    @app.get("/v1/fine_tuning/jobs/{job_id}", dependencies=[v1])
    def retrieve_job(job_id: str):
        return job_service.job_object(job_service.get_job(db, job_id))

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel", dependencies=[v1])
    def cancel_job(job_id: str):
        return job_service.cancel_job(db, job_id)

    @app.post("/v1/fine_tuning/jobs/{job_id}/pause", dependencies=[v1])
    def pause_job(job_id: str):
        return job_service.pause_job(db, job_id)

    @app.post("/v1/fine_tuning/jobs/{job_id}/resume", dependencies=[v1])
    def resume_job(job_id: str):
        return job_service.resume_job(db, job_id)

    @app.get("/v1/fine_tuning/jobs/{job_id}/events", dependencies=[v1])
    def job_events(job_id: str, after: str | None = None, limit: int = 20):
        data, more = job_service.list_events(db, job_id, after, max(1, min(limit, 100)))
        return _page(data, more)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints", dependencies=[v1])
    def job_checkpoints(job_id: str, after: str | None = None, limit: int = 10):
        data, more = job_service.list_checkpoints(db, workspace, job_id, after, max(1, min(limit, 100)))
        return _page(data, more, with_ids=True)

    # ── models ─────────────────────────────────────────────────────────────────────────────
    @app.get("/v1/models", dependencies=[v1])
    def list_models():
        return _page([_model_object(t) for t in models.targets()], False)

    @app.get("/v1/models/{model:path}", dependencies=[v1])
    def retrieve_model(model: str):
        return _model_object(models.resolve(model))

    @app.delete("/v1/models/{model:path}", dependencies=[v1])
    def delete_model(model: str):
        return models.delete(model)

    # ── inference ──────────────────────────────────────────────────────────────────────────
    @app.post("/v1/chat/completions", dependencies=[v1])
    async def chat_completions(request: Request):
        body = await _json(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "'messages' must be a non-empty array.", "invalid_value", "messages")
        return await _completion(models, log, body, messages=messages, prompt=None, chat=True)

    @app.post("/v1/completions", dependencies=[v1])
    async def completions(request: Request):
        body = await _json(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = prompt[0] if prompt else ""
        if not isinstance(prompt, str):
            raise APIError(400, "'prompt' must be a string.", "invalid_value", "prompt")
        return await _completion(models, log, body, messages=None, prompt=prompt, chat=False)

    @app.post("/v1/classifications", dependencies=[v1])
    async def classifications(request: Request):
        """tunesmith's own route (OpenAI has none): ``{"model": <classify run id>, "input": str | [str]}``
        → one ``{label, confidence, probabilities}`` per input."""
        body = await _json(request)
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise APIError(400, "'input' must be a string or a non-empty array of strings.", "invalid_value", "input")
        if not body.get("model"):
            raise APIError(400, "Missing required parameter: 'model'.", "missing_required_parameter", "model")
        request_id, started = new_request_id("clf-"), time.perf_counter()
        try:
            result = await run_in_threadpool(models.classify, str(body["model"]), texts)
        except APIError as e:
            await run_in_threadpool(log.record, request_id, str(body["model"]), "classification", e.status, started,
                                    inputs=texts, error=e.message)
            raise
        labels = [(item["label"], item["confidence"]) for item in result["data"]]
        await run_in_threadpool(log.record, request_id, str(body["model"]), "classification", 200, started,
                                inputs=texts, labels=labels)
        return {"id": request_id, **result}

    return app


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise APIError(400, "The request body is not valid JSON.", "invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.", "invalid_json")
    return body


async def _multipart_upload(request: Request, files: FileStore) -> dict:
    """Stream the multipart body to disk part by part, enforcing the size limit as bytes arrive
    (starlette's form parser would spool the whole upload first)."""
    from python_multipart.multipart import parse_options_header

    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise APIError(400, "Expected a multipart/form-data upload with fields 'file' and 'purpose'.", "invalid_request_error")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > files.max_bytes + 64 * 1024:
        raise APIError(413, f"File is larger than the {files.max_bytes:,}-byte upload limit.", "file_too_large", "file")
    return await files.save_multipart(request.stream(), options[b"boundary"])


def _page(data: list[dict], has_more: bool, with_ids: bool = False) -> dict:
    page: dict[str, Any] = {"object": "list", "data": data, "has_more": has_more}
    if with_ids:
        page |= {"first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
    return page


def _model_object(target) -> dict:
    return {"id": target.name, "object": "model", "created": target.created, "owned_by": target.owned_by}


def _params(body: dict[str, Any]) -> dict[str, Any]:
    stop = body.get("stop")
    params = {
        "max_tokens": int(body.get("max_completion_tokens") or body.get("max_tokens") or 256),
        "temperature": float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0),
        "top_p": float(body.get("top_p") if body.get("top_p") is not None else 1.0),
        "n": int(body.get("n") or 1),
        "seed": body.get("seed"),
        "stop": [stop] if isinstance(stop, str) else list(stop or []),
    }
    if not 1 <= params["max_tokens"] <= 8192:
        raise APIError(400, "max_tokens must be between 1 and 8192.", "invalid_value", "max_tokens")
    if not 0 <= params["temperature"] <= 2:
        raise APIError(400, "temperature must be between 0 and 2.", "invalid_value", "temperature")
    if not 0 < params["top_p"] <= 1:
        raise APIError(400, "top_p must be in (0, 1].", "invalid_value", "top_p")
    if not 1 <= params["n"] <= 16:
        raise APIError(400, "n must be between 1 and 16.", "invalid_value", "n")
    if len(params["stop"]) > 4:
        raise APIError(400, "At most 4 stop sequences.", "invalid_value", "stop")
    return params


async def _completion(models: ModelServer, log: RequestLog, body: dict, messages, prompt, chat: bool):
    name = body.get("model")
    if not name:
        raise APIError(400, "Missing required parameter: 'model'.", "missing_required_parameter", "model")
    completion_id = new_request_id("chatcmpl-" if chat else "cmpl-")
    started, created = time.perf_counter(), int(time.time())
    asked = last_user_text(messages) if chat else prompt
    record = partial(log.record, completion_id, str(name), "chat" if chat else "completion", inputs=[asked])
    try:
        params = _params(body)
        if body.get("stream"):
            if params["n"] != 1:
                raise APIError(400, "Streaming supports n=1 only.", "invalid_value", "n")
            stream = await run_in_threadpool(models.stream, name, messages, prompt, params)
            return StreamingResponse(_sse(stream, completion_id, created, name, chat, partial(record, started=started)),
                                     media_type="text/event-stream")
        result = await run_in_threadpool(models.complete, name, messages, prompt, params)
    except APIError as e:
        await run_in_threadpool(record, status=e.status, started=started, error=e.message)
        raise
    completion_tokens = sum(result["completion_tokens"])
    await run_in_threadpool(record, status=200, started=started, prompt_tokens=result["prompt_tokens"],
                            completion_tokens=completion_tokens, output=result["texts"][0])
    choices = []
    for i, (text, reason) in enumerate(zip(result["texts"], result["finish_reasons"])):
        if chat:
            choices.append({"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                            "finish_reason": reason, "logprobs": None})
        else:
            choices.append({"index": i, "text": text, "finish_reason": reason, "logprobs": None})
    return {"id": completion_id, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": name, "choices": choices, "system_fingerprint": None,
            "usage": {"prompt_tokens": result["prompt_tokens"], "completion_tokens": completion_tokens,
                      "total_tokens": result["prompt_tokens"] + completion_tokens}}


async def _sse(stream, completion_id: str, created: int, name: str, chat: bool, record):
    def chunk(delta: dict | str, finish: str | None) -> str:
        if chat:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None}
            obj = "text_completion"
        return "data: " + json.dumps({"id": completion_id, "object": obj, "created": created, "model": name,
                                      "choices": [choice]}) + "\n\n"

    if chat:
        yield chunk({"role": "assistant", "content": ""}, None)
    try:
        async for piece in iterate_in_threadpool(stream):
            yield chunk({"content": piece} if chat else piece, None)
    except Exception as e:  # the status line has gone out: report in the stream, as OpenAI does
        yield "data: " + json.dumps(APIError(500, str(e), "server_error", type_="server_error").body()) + "\n\n"
        await run_in_threadpool(record, status=500, error=str(e), output=stream.text)
        return
    await run_in_threadpool(record, status=200, prompt_tokens=stream.prompt_tokens,
                            completion_tokens=stream.completion_tokens, output=stream.text)
    yield chunk({} if chat else "", "stop")
    yield "data: [DONE]\n\n"
