"""The HTTP layer (FastAPI) under ``/v1``: OpenAI's routes and shapes over server/files.py,
server/jobs.py and server/inference.py. Every route needs a valid API key (Bearer), unless the
server was started explicitly without keys for localhost development; some need an admin key
(server/keys.py). The OpenAPI schema is at ``/v1/openapi.json``, behind a key like the rest (no
``/docs`` page: FastAPI's loads its scripts from a CDN, and this server runs offline).

Every body is parsed by its pydantic model (server/schemas.py) and every error, whatever raised
it, leaves in OpenAI's shape (``{"error": {message, type, param, code}}``) and is written to the
request log with its status: a malformed request is a 400 naming the field, a database that is
down a 503 with Retry-After, a bug a 500 whose details stay in the server's log."""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.data.formats import last_user_text
from tunesmith.jobs import fine_tuning as job_service
from tunesmith.web import schemas
from tunesmith.jobs.db import Database
from tunesmith.errors import APIError
from tunesmith.jobs.files import FileStore
from tunesmith.serving.model_server import ModelServer
from tunesmith.jobs.keys import NO_KEYS, Principal, verify
from tunesmith.jobs.request_log import LogSettings, RequestLog, new_request_id
from tunesmith.web.ui import mount_ui
from tunesmith.workspace import Workspace

DEFAULT_UPLOAD_LIMIT = 512 * 1024 * 1024  # OpenAI's per-file limit
DEFAULT_BODY_LIMIT = 8 * 1024 * 1024      # a JSON body: far more than any context holds
INFERENCE = {"/v1/chat/completions": "chat", "/v1/completions": "completion", "/v1/classifications": "classification"}


@dataclass
class ServerSettings:
    require_keys: bool = True
    max_upload_bytes: int = DEFAULT_UPLOAD_LIMIT
    max_body_bytes: int = DEFAULT_BODY_LIMIT
    cors_origins: tuple[str, ...] = ()
    max_adapters: int = 8
    max_waiting: int = 16
    request_log: LogSettings = field(default_factory=LogSettings)


def create_app(workspace: Workspace, settings: ServerSettings | None = None, db: Database | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    db = db or Database.for_workspace(workspace)
    files = FileStore(db, workspace.home / "files", settings.max_upload_bytes)
    models = ModelServer(workspace, db, settings.max_adapters, settings.max_waiting)
    log = RequestLog(db, settings.request_log)
    app = FastAPI(title="tunesmith", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.db, app.state.models, app.state.log, app.state.settings = db, models, log, settings
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])
    _error_handlers(app, log)

    def principal(request: Request) -> Principal:
        if not settings.require_keys:
            return NO_KEYS
        header = request.headers.get("authorization", "")
        secret = header[7:].strip() if header.lower().startswith("bearer ") else ""
        found = verify(db, secret) if secret else None
        if found is None:
            raise APIError(401, "Incorrect API key provided." if secret else "Missing API key (Authorization: Bearer ...).",
                           "invalid_api_key", type_="invalid_request_error")
        return found

    def admin(who: Principal = Depends(principal)) -> Principal:
        if not who.admin:
            raise forbidden("this action")
        return who

    v1, as_admin = Depends(principal), Depends(admin)
    mount_ui(app)

    @app.get("/health", include_in_schema=False)
    def health():
        """For a load balancer or supervisor: no key, nothing but whether the process answers."""
        return {"status": "ok"}

    @app.get("/v1/tunesmith/status", dependencies=[v1])
    def status():
        """Inference admission (requests admitted / capacity), models and adapters loaded."""
        return {"object": "tunesmith.status", "inference": models.status()}

    @app.get("/v1/openapi.json", dependencies=[v1], include_in_schema=False)
    def openapi_schema():
        return app.openapi()

    _file_routes(app, v1, files, models, workspace, settings)
    _tunesmith_routes(app, v1, files, db, workspace, settings)
    _job_routes(app, v1, files, models, db, workspace, settings)
    _model_routes(app, v1, models)
    _inference_routes(app, v1, models, log, settings)
    _key_routes(app, as_admin, db, settings)
    return app


def forbidden(what: str) -> APIError:
    return APIError(403, f"You need an admin key for {what} (tunesmith keys create --role admin).",
                    "insufficient_permissions", type_="invalid_request_error")


# ── errors ─────────────────────────────────────────────────────────────────────────────────
def _error_handlers(app: FastAPI, log: RequestLog) -> None:
    """One shape for every error, each one written to the request log (see the module docstring)."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    def answer(request: Request, error: APIError) -> JSONResponse:
        _log_failure(request, log, error)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return await run_in_threadpool(answer, request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = str(first["loc"][-1]) if first.get("loc") else None
        error = APIError(400, f"Invalid '{param}': {first['msg']}", "invalid_value", param)
        return await run_in_threadpool(answer, request, error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = f"Unknown request URL: {request.method} {request.url.path}." if exc.status_code == 404 else \
            f"{request.method} is not allowed on {request.url.path}." if exc.status_code == 405 else str(exc.detail)
        code = {404: "unknown_url", 405: "method_not_allowed"}.get(exc.status_code)
        return await run_in_threadpool(answer, request, APIError(exc.status_code, message, code,
                                                                 headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        if _database_down(exc, (OperationalError, DBAPIError)):
            error = APIError(503, "The server's database is unavailable; retry shortly.", "database_unavailable",
                             type_="server_error", headers={"Retry-After": "5"})
        else:  # a bug: the details go to the operator's log, never to the client
            print(f"tunesmith: error in {request.method} {request.url.path}:\n{traceback.format_exc()}",
                  file=sys.stderr)
            error = APIError(500, "The server had an error while processing your request.", "server_error",
                             type_="server_error")
        return await run_in_threadpool(answer, request, error)


def _database_down(exc: BaseException, kinds: tuple[type, ...]) -> bool:
    """A database that is down or locked (after db.py's retries): the client should retry."""
    from tunesmith.jobs.db import DatabaseUnavailable

    return isinstance(exc, kinds + (DatabaseUnavailable,))


def _log_failure(request: Request, log: RequestLog, error: APIError) -> None:
    """An error into the request log: with the request's own record (id, model, input) where an
    inference route had begun one, otherwise with what the path and body tell."""
    if error.status == 401:  # no key, no row: strangers cannot write to the database
        return
    record = getattr(request.state, "record", None)
    if record is not None:
        record(status=error.status, error=error.message)
        return
    endpoint = INFERENCE.get(request.url.path) or request.url.path.removeprefix("/v1/").split("/")[0][:32]
    model = getattr(request.state, "model", None) or ""
    log.record(new_request_id("req-"), model, endpoint, error.status, getattr(request.state, "started", time.perf_counter()),
               error=error.message)


# ── files ──────────────────────────────────────────────────────────────────────────────────
def _file_routes(app: FastAPI, v1, files: FileStore, models: ModelServer, workspace: Workspace,
                 settings: ServerSettings) -> None:
    from tunesmith.jobs.files import file_object

    @app.post("/v1/files")
    async def create_file(request: Request, who: Principal = v1):
        return await _multipart_upload(request, files, who)

    @app.get("/v1/files", dependencies=[v1])
    def list_files(purpose: str | None = Query(None, max_length=32), limit: int = Query(10000, ge=1, le=10000),
                   after: str | None = Query(None, max_length=64), order: str = Query("desc", pattern="^(asc|desc)$")):
        data, more = files.list(purpose, limit, after, order)
        return _page(data, more)

    @app.get("/v1/files/{file_id}", dependencies=[v1])
    def retrieve_file(file_id: str):
        return file_object(files.get(file_id))

    @app.get("/v1/files/{file_id}/card", dependencies=[v1])
    def file_card(file_id: str, model: str | None = Query(None, max_length=256),
                  max_length: int = Query(1024, ge=16, le=131072)):
        """tunesmith's own: the dataset card of an uploaded file (counts, token lengths under a
        base model the server has, labels, personal data found), or its problems."""
        from tunesmith import api

        row = files.get(file_id)
        if model is not None and model not in {t.name for t in models.targets() if t.owned_by == "system"}:
            raise APIError(404, f"The model '{model}' does not exist", "model_not_found", "model")
        report, card = api.check_data(files.path(row.id), model=model, max_length=max_length, workspace=workspace)
        problems = report.summary(limit=50).replace(str(files.path(row.id)), row.filename).splitlines()
        card_dict = card.to_dict() | {"path": row.filename} if card else None
        return {"file_id": row.id, "filename": row.filename, "valid": report.ok, "problems": [] if report.ok else problems,
                "card": card_dict}

    @app.post("/v1/files/{file_id}/clean", dependencies=[v1], openapi_extra=schemas.openapi_body(schemas.CleanRequest))
    async def clean_file(file_id: str, request: Request):
        """tunesmith's own: `data clean` on an uploaded file; the cleaned file and its rejects are new files."""
        from tunesmith.web import prepare
        options = schemas.parse(schemas.CleanRequest, await _json(request, settings)).model_dump(exclude_unset=True)
        return await run_in_threadpool(prepare.clean, files, file_id, options)

    @app.post("/v1/files/{file_id}/split", dependencies=[v1], openapi_extra=schemas.openapi_body(schemas.SplitRequest))
    async def split_file(file_id: str, request: Request):
        """tunesmith's own: `data split` on an uploaded file; each split is a new file."""
        from tunesmith.web import prepare
        body = schemas.parse(schemas.SplitRequest, await _json(request, settings)).model_dump()
        return await run_in_threadpool(prepare.split, files, file_id, body)

    @app.get("/v1/files/{file_id}/content", dependencies=[v1])
    def file_content(file_id: str):
        row = files.get(file_id)
        return FileResponse(files.path(row.id), media_type="application/octet-stream", filename=row.filename)

    @app.delete("/v1/files/{file_id}")
    def delete_file(file_id: str, who: Principal = v1):
        row = files.get(file_id)
        if row.owner is not None and row.owner != who.key_id and not who.admin:
            raise forbidden("deleting another key's file")
        return files.delete(file_id)


# ── tunesmith's own: review feedback, runs, evaluations, recipe schemas ─────────────────────
def _tunesmith_routes(app: FastAPI, v1, files: FileStore, db: Database, workspace: Workspace,
                      settings: ServerSettings) -> None:
    from tunesmith.jobs import evaluations, feedback

    @app.post("/v1/tunesmith/feedback", dependencies=[v1], openapi_extra=schemas.openapi_body(schemas.FeedbackRequest))
    async def add_feedback(request: Request):
        body = schemas.parse(schemas.FeedbackRequest, await _json(request, settings))
        return await run_in_threadpool(feedback.add, db, body.model_dump(exclude_unset=True))

    @app.get("/v1/tunesmith/feedback", dependencies=[v1])
    def list_feedback(status: str | None = Query(None, pattern="^(new|accepted|rejected|exported)$")):
        return _page(feedback.list_items(db, status), False)

    @app.post("/v1/tunesmith/feedback/export", dependencies=[v1])
    def export_feedback():
        return feedback.export(db, files)

    @app.post("/v1/tunesmith/feedback/{feedback_id}", dependencies=[v1], openapi_extra=schemas.openapi_body(schemas.FeedbackUpdate))
    async def update_feedback(feedback_id: str, request: Request):
        body = schemas.parse(schemas.FeedbackUpdate, await _json(request, settings))
        return await run_in_threadpool(feedback.update, db, feedback_id, body.model_dump(exclude_unset=True))

    @app.get("/v1/tunesmith/runs", dependencies=[v1])
    def list_runs():
        return _page(evaluations.list_runs(workspace, db), False)

    @app.get("/v1/tunesmith/runs/{run_id}", dependencies=[v1])
    def retrieve_run(run_id: str):
        return evaluations.run_object(workspace, db, run_id)

    @app.get("/v1/tunesmith/runs/{run_id}/evaluation", dependencies=[v1])
    def run_evaluation(run_id: str):
        return evaluations.evaluation(workspace, run_id)

    @app.post("/v1/tunesmith/runs/{run_id}/evaluation", dependencies=[v1], openapi_extra=schemas.openapi_body(schemas.EvaluationRequest))
    async def start_evaluation(run_id: str, request: Request):
        body = schemas.parse(schemas.EvaluationRequest, await _json(request, settings))
        return await run_in_threadpool(evaluations.start, workspace, files, run_id, body.model_dump(exclude_unset=True))

    @app.get("/v1/tunesmith/runs/{run_id}/evaluation/report.html", dependencies=[v1])
    def evaluation_page(run_id: str):
        from fastapi.responses import HTMLResponse
        # Shown in a sandboxed frame by the UI; the page has no scripts and loads nothing.
        return HTMLResponse(evaluations.report_html(workspace, run_id),
                            headers={"Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'"})

    @app.get("/v1/tunesmith/compare", dependencies=[v1])
    def compare_runs(runs: list[str] = Query(default=[], max_length=50)):
        return evaluations.compare(workspace, runs)

    @app.get("/v1/tunesmith/schema/{recipe}", dependencies=[v1])
    def recipe_schema(recipe: str):
        """The JSON schema of a recipe's settings (types, ranges, defaults, descriptions), from
        which the web UI builds its run form."""
        from tunesmith.config import recipe_schema as schema_of

        found = schema_of(recipe)
        if found is None:
            raise APIError(404, f"no recipe '{recipe}' (sft, classify, dpo)", "not_found", "recipe")
        return found


# ── fine-tuning jobs ───────────────────────────────────────────────────────────────────────
def _job_routes(app: FastAPI, v1, files: FileStore, models: ModelServer, db: Database, workspace: Workspace,
                settings: ServerSettings) -> None:
    @app.post("/v1/fine_tuning/jobs", dependencies=[v1], openapi_extra=schemas.openapi_body(schemas.FineTuningJobRequest))
    async def create_job(request: Request):
        body = schemas.parse(schemas.FineTuningJobRequest, await _json(request, settings))
        # Only models the server already has: a name from the request never becomes a path.
        bases = {t.name for t in await run_in_threadpool(models.targets) if t.is_base}
        if body.model not in bases:
            raise APIError(400, f"Model {body.model!r} is not available for fine-tuning; available: "
                           f"{', '.join(sorted(bases)) or 'none (pull one with `tunesmith models pull`)'}.",
                           "model_not_available", "model")
        for param in ("training_file", "validation_file"):
            if getattr(body, param) is not None:
                await run_in_threadpool(files.require_trainable, getattr(body, param), param)
        await run_in_threadpool(files.require_examples, body.training_file, "training_file")
        return await run_in_threadpool(job_service.create_job, db, body.model_dump(exclude_unset=True))

    @app.get("/v1/fine_tuning/jobs", dependencies=[v1])
    def list_jobs(request: Request, after: str | None = Query(None, max_length=64), limit: int = Query(20, ge=1, le=100)):
        metadata = {k[9:-1]: v for k, v in request.query_params.items() if k.startswith("metadata[")}
        data, more = job_service.list_jobs(db, after, limit, metadata)
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
    def job_events(job_id: str, after: str | None = Query(None, max_length=64), limit: int = Query(20, ge=1, le=100)):
        data, more = job_service.list_events(db, job_id, after, limit)
        return _page(data, more)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints", dependencies=[v1])
    def job_checkpoints(job_id: str, after: str | None = Query(None, max_length=64), limit: int = Query(10, ge=1, le=100)):
        data, more = job_service.list_checkpoints(db, workspace, job_id, after, limit)
        return _page(data, more, with_ids=True)


# ── models ─────────────────────────────────────────────────────────────────────────────────
def _model_routes(app: FastAPI, v1, models: ModelServer) -> None:
    @app.get("/v1/models", dependencies=[v1])
    def list_models():
        return _page([_model_object(t) for t in models.targets()], False)

    @app.get("/v1/models/{model:path}", dependencies=[v1])
    def retrieve_model(model: str):
        return _model_object(models.resolve(model))

    @app.delete("/v1/models/{model:path}")
    def delete_model(model: str, who: Principal = v1):
        target = models.resolve(model)
        if target.owned_by == "system" and target.alias_of is None and not who.admin:
            raise forbidden("deleting a base model")
        return models.delete(model)


# ── API keys (admin) ───────────────────────────────────────────────────────────────────────
def _key_routes(app: FastAPI, as_admin, db: Database, settings: ServerSettings) -> None:
    from tunesmith.jobs import keys
    @app.get("/v1/tunesmith/keys", dependencies=[as_admin])
    def list_keys():
        return _page(keys.list_keys(db), False)

    @app.post("/v1/tunesmith/keys", dependencies=[as_admin], openapi_extra=schemas.openapi_body(schemas.KeyRequest))
    async def create_key(request: Request):
        body = schemas.parse(schemas.KeyRequest, await _json(request, settings))
        secret, info = await run_in_threadpool(keys.create_key, db, body.name, body.role)
        return info | {"secret": secret}

    @app.delete("/v1/tunesmith/keys/{key_id}", dependencies=[as_admin])
    def revoke_key(key_id: str):
        if not keys.revoke_key(db, key_id):
            raise APIError(404, f"No active API key with id '{key_id}' exists.", "api_key_not_found", "key_id")
        return {"id": key_id, "object": "tunesmith.api_key", "deleted": True}


# ── inference ──────────────────────────────────────────────────────────────────────────────
def _inference_routes(app: FastAPI, v1, models: ModelServer, log: RequestLog, settings: ServerSettings) -> None:
    @app.post("/v1/chat/completions", dependencies=[v1], openapi_extra=schemas.openapi_body(schemas.ChatCompletionRequest))
    async def chat_completions(request: Request):
        body = schemas.parse(schemas.ChatCompletionRequest, await _json(request, settings))
        return await _completion(request, models, log, body, chat=True)

    @app.post("/v1/completions", dependencies=[v1], openapi_extra=schemas.openapi_body(schemas.CompletionRequest))
    async def completions(request: Request):
        body = schemas.parse(schemas.CompletionRequest, await _json(request, settings))
        return await _completion(request, models, log, body, chat=False)

    @app.post("/v1/classifications", dependencies=[v1], openapi_extra=schemas.openapi_body(schemas.ClassificationRequest))
    async def classifications(request: Request):
        """tunesmith's own route (OpenAI has none): ``{"model": <classify run id>, "input": str | [str]}``
        → one ``{label, confidence, probabilities}`` per input."""
        body = schemas.parse(schemas.ClassificationRequest, await _json(request, settings))
        texts, request_id, started = body.texts(), new_request_id("clf-"), time.perf_counter()
        record = request.state.record = partial(log.record, request_id, body.model, "classification", started=started,
                                                inputs=texts)
        result = await run_in_threadpool(models.classify, body.model, texts)
        labels = [(item["label"], item["confidence"]) for item in result["data"]]
        await run_in_threadpool(record, status=200, labels=labels)
        return {"id": request_id, **result}


async def _json(request: Request, settings: ServerSettings) -> Any:
    """The body as JSON, read up to the server's body limit (413 beyond it, with or without a
    Content-Length); a body that is not JSON, or nested past what the parser can take, is a 400."""
    request.state.started = time.perf_counter()
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > settings.max_body_bytes:
        raise _too_large(settings.max_body_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > settings.max_body_bytes:
            raise _too_large(settings.max_body_bytes)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise APIError(400, "The request body is not valid JSON.", "invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.", "invalid_json")
    if isinstance(body.get("model"), str):
        request.state.model = body["model"][:255]
    return body


def _too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than the server's {limit:,}-byte limit.", "request_too_large")


async def _multipart_upload(request: Request, files: FileStore, who: Principal) -> dict:
    """Stream the multipart body to disk part by part, enforcing the size limit as bytes arrive
    (starlette's form parser would spool the whole upload first)."""
    from python_multipart.multipart import parse_options_header

    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise APIError(400, "Expected a multipart/form-data upload with fields 'file' and 'purpose'.", "invalid_request_error")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > files.max_bytes + 64 * 1024:
        raise APIError(413, f"File is larger than the {files.max_bytes:,}-byte upload limit.", "file_too_large", "file")
    return await files.save_multipart(request.stream(), options[b"boundary"], owner=who.key_id)


def _page(data: list[dict], has_more: bool, with_ids: bool = False) -> dict:
    page: dict[str, Any] = {"object": "list", "data": data, "has_more": has_more}
    if with_ids:
        page |= {"first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
    return page


def _model_object(target) -> dict:
    return {"id": target.name, "object": "model", "created": target.created, "owned_by": target.owned_by}


async def _completion(request: Request, models: ModelServer, log: RequestLog, body, chat: bool):
    completion_id = new_request_id("chatcmpl-" if chat else "cmpl-")
    started, created = time.perf_counter(), int(time.time())
    messages = body.conversation() if chat else None
    prompt = None if chat else body.prompts()
    params = body.params()
    record = partial(log.record, completion_id, body.model, "chat" if chat else "completion", started=started,
                     inputs=[last_user_text(messages) if chat else prompt[0]])
    request.state.record = record  # what the error handlers log a failure with
    if body.stream:
        if params["n"] != 1:
            raise APIError(400, "Streaming supports n=1 only.", "invalid_value", "n")
        if not chat and len(prompt) != 1:
            raise APIError(400, "Streaming supports one prompt only.", "invalid_value", "prompt")
        stream = await run_in_threadpool(models.stream, body.model, messages, None if chat else prompt[0], params)
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(stream, completion_id, created, body.model, chat, record, usage),
                                 media_type="text/event-stream")
    cancel = threading.Event()
    result = await _unless_disconnected(request, cancel, models.complete, body.model, messages, prompt, params, cancel)
    if result is None:  # the client went away: generation stopped, nothing to answer
        await run_in_threadpool(record, status=499, error="client disconnected")
        return JSONResponse({}, status_code=499)
    await run_in_threadpool(record, status=200, prompt_tokens=result["prompt_tokens"],
                            completion_tokens=sum(result["completion_tokens"]), output=result["texts"][0])
    return _completion_object(result, completion_id, created, body.model, chat)


async def _unless_disconnected(request: Request, cancel: threading.Event, work, *args):
    """``work(*args)`` in a thread, watching the client: if it disconnects, ``cancel`` is set
    (generation stops within a token) and None is returned once the thread is done."""
    task = asyncio.ensure_future(run_in_threadpool(work, *args))
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if done:
            return None if cancel.is_set() else task.result()
        if not cancel.is_set() and await request.is_disconnected():
            cancel.set()


def _completion_object(result: dict, completion_id: str, created: int, name: str, chat: bool) -> dict:
    choices = []
    for i, (text, reason) in enumerate(zip(result["texts"], result["finish_reasons"])):
        if chat:
            choices.append({"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                            "finish_reason": reason, "logprobs": None})
        else:
            choices.append({"index": i, "text": text, "finish_reason": reason, "logprobs": None})
    completion_tokens = sum(result["completion_tokens"])
    return {"id": completion_id, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": name, "choices": choices, "system_fingerprint": None,
            "usage": {"prompt_tokens": result["prompt_tokens"], "completion_tokens": completion_tokens,
                      "total_tokens": result["prompt_tokens"] + completion_tokens}}


async def _sse(stream, completion_id: str, created: int, name: str, chat: bool, record, usage: bool = False):
    """The stream as server-sent events. However it ends — finished, failed, or the client gone
    (the task is cancelled, or a write fails) — the generation is cancelled and the request is
    logged; the generating thread then releases the model and the admission slot itself.
    ``usage`` (``stream_options.include_usage``): a last chunk with no choices and the token counts."""
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta: dict | str, finish: str | None) -> str:
        if chat:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None}
        return "data: " + json.dumps({"id": completion_id, "object": obj, "created": created, "model": name,
                                      "choices": [choice]}) + "\n\n"

    outcome: dict[str, Any] = {"status": 499, "error": "client disconnected"}
    try:
        if chat:
            yield chunk({"role": "assistant", "content": ""}, None)
        try:
            async for piece in iterate_in_threadpool(stream):
                yield chunk({"content": piece} if chat else piece, None)
        except Exception as e:  # noqa: BLE001 - the status line has gone out: report in the stream, as OpenAI does
            print(f"tunesmith: error while streaming {completion_id}:\n{traceback.format_exc()}", file=sys.stderr)
            outcome = {"status": 500, "error": str(e)[:2000]}
            yield "data: " + json.dumps(APIError(500, "The server had an error while generating.", "server_error",
                                                 type_="server_error").body()) + "\n\n"
            return
        outcome = {"status": 200, "prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.completion_tokens}
        yield chunk({} if chat else "", "stop")
        if usage:
            counts = {"prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.completion_tokens,
                      "total_tokens": stream.prompt_tokens + (stream.completion_tokens or 0)}
            yield "data: " + json.dumps({"id": completion_id, "object": obj, "created": created, "model": name,
                                         "choices": [], "usage": counts}) + "\n\n"
        yield "data: [DONE]\n\n"
    finally:
        stream.cancel()  # no await here: a cancelled task cannot await; the log is written by a thread
        threading.Thread(target=record, kwargs=outcome | {"output": stream.text}, daemon=True).start()
