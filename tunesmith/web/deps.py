"""What routes are handed, as FastAPI dependencies (the full-stack template's ``Annotated``
style): the caller's key (``PrincipalDep``), the admin-role check (``AdminDep``), and the objects
``create_app`` built once and keeps on ``app.state`` (database, model server, file store,
request log, workspace). Routes never build any of these themselves.

A key is a Bearer token checked against the database (jobs/keys.py); a server started without
keys (localhost development only) hands every route the ``NO_KEYS`` principal. A missing or
wrong key is a 401, which the request log does not record (web/errors.py): strangers cannot
write to the database."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tunesmith.errors import APIError
from tunesmith.jobs.db import Database
from tunesmith.jobs.files import FileStore
from tunesmith.jobs.keys import NO_KEYS, Principal, verify
from tunesmith.jobs.request_log import RequestLog
from tunesmith.serving.model_server import ModelServer
from tunesmith.workspace import Workspace


def principal(request: Request) -> Principal:
    """The key the request was made with. A plain ``def``: FastAPI runs it in a thread, as the
    key is looked up in the database."""
    if not request.app.state.settings.require_keys:
        return NO_KEYS
    header = request.headers.get("authorization", "")
    secret = header[7:].strip() if header.lower().startswith("bearer ") else ""
    found = verify(request.app.state.db, secret) if secret else None
    if found is None:
        raise APIError(401, "Incorrect API key provided." if secret else "Missing API key (Authorization: Bearer ...).",
                       "invalid_api_key", type_="invalid_request_error")
    return found


PrincipalDep = Annotated[Principal, Depends(principal)]


def admin(who: PrincipalDep) -> Principal:
    if not who.admin:
        raise forbidden("this action")
    return who


AdminDep = Annotated[Principal, Depends(admin)]


def forbidden(what: str) -> APIError:
    """The 403 for a user key asking for what only an admin key (or the owner) may do."""
    return APIError(403, f"You need an admin key for {what} (tunesmith keys create --role admin).",
                    "insufficient_permissions", type_="invalid_request_error")


# The app's state objects. ``async def``: a plain attribute read, not worth a trip to a thread.
async def database(request: Request) -> Database:
    return request.app.state.db


async def model_server(request: Request) -> ModelServer:
    return request.app.state.models


async def file_store(request: Request) -> FileStore:
    return request.app.state.files


async def request_log(request: Request) -> RequestLog:
    return request.app.state.log


async def workspace(request: Request) -> Workspace:
    return request.app.state.workspace


DatabaseDep = Annotated[Database, Depends(database)]
ModelsDep = Annotated[ModelServer, Depends(model_server)]
FilesDep = Annotated[FileStore, Depends(file_store)]
LogDep = Annotated[RequestLog, Depends(request_log)]
WorkspaceDep = Annotated[Workspace, Depends(workspace)]
