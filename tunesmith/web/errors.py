"""Every error in OpenAI's shape (``{"error": {message, type, param, code}}``), whatever raised
it, each written to the request log with its status:

- an ``APIError`` raised anywhere (a route, a dependency, the core): as it is;
- a request FastAPI itself could not validate (a query or path parameter): 400 naming ``param``;
- an unknown URL or method: 404 / 405 saying which;
- a database that is down or locked (after jobs/db.py's retries): 503 with Retry-After;
- anything else is a bug: 500, its traceback in the server's log, never in the answer."""
from __future__ import annotations

import sys
import time
import traceback

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.errors import APIError
from tunesmith.jobs.db import DatabaseUnavailable
from tunesmith.jobs.request_log import new_request_id

INFERENCE = {"/v1/chat/completions": "chat", "/v1/completions": "completion", "/v1/classifications": "classification"}
DATABASE_DOWN = (OperationalError, DBAPIError, DatabaseUnavailable)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


async def api_error(request: Request, exc: APIError) -> JSONResponse:
    return await run_in_threadpool(_answer, request, exc)


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = str(first["loc"][-1]) if first.get("loc") else None
    error = APIError(400, f"Invalid '{param}': {first['msg']}", "invalid_value", param)
    return await run_in_threadpool(_answer, request, error)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = f"Unknown request URL: {request.method} {request.url.path}." if exc.status_code == 404 else \
        f"{request.method} is not allowed on {request.url.path}." if exc.status_code == 405 else str(exc.detail)
    code = {404: "unknown_url", 405: "method_not_allowed"}.get(exc.status_code)
    error = APIError(exc.status_code, message, code, headers=dict(exc.headers or {}))
    return await run_in_threadpool(_answer, request, error)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, DATABASE_DOWN):  # the client should retry
        error = APIError(503, "The server's database is unavailable; retry shortly.", "database_unavailable",
                         type_="server_error", headers={"Retry-After": "5"})
    else:  # a bug: the details go to the operator's log, never to the client
        print(f"tunesmith: error in {request.method} {request.url.path}:\n{traceback.format_exc()}", file=sys.stderr)
        error = APIError(500, "The server had an error while processing your request.", "server_error",
                         type_="server_error")
    return await run_in_threadpool(_answer, request, error)


def _answer(request: Request, error: APIError) -> JSONResponse:
    """Log the failure, then answer it; in a thread, as logging writes to the database."""
    _log_failure(request, error)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _log_failure(request: Request, error: APIError) -> None:
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
    request.app.state.log.record(new_request_id("req-"), model, endpoint, error.status,
                                 getattr(request.state, "started", time.perf_counter()), error=error.message)
