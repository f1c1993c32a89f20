"""The HTTP layer (FastAPI) under ``/v1``: OpenAI's routes and shapes over the file store
(jobs/files.py), the fine-tuning job queue (jobs/fine_tuning.py) and the model server
(serving/model_server.py), plus tunesmith's own routes and the web UI at ``/ui``.

``create_app`` builds each shared object once, keeps it on ``app.state`` (routes receive them
as dependencies, web/deps.py) and includes one router per route family (web/routes/). Every
route needs a valid API key (Bearer), unless the server was started explicitly without keys for
localhost development; some need an admin key (jobs/keys.py). The OpenAPI schema is at
``/v1/openapi.json``, behind a key like the rest.

Every body is parsed by its pydantic model (web/schemas.py, read by web/bodies.py) and every
error, whatever raised it, leaves in OpenAI's shape (``{"error": {message, type, param, code}}``)
and is written to the request log with its status (web/errors.py): a malformed request is a 400
naming the field, a database that is down a 503 with Retry-After, a bug a 500 whose details stay
in the server's log."""
from __future__ import annotations

import sys

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from tunesmith.jobs.db import Database
from tunesmith.jobs.files import FileStore
from tunesmith.jobs.request_log import RequestLog
from tunesmith.jobs.served_models import JobModels
from tunesmith.serving.model_server import ModelServer
from tunesmith.web.errors import add_error_handlers
from tunesmith.web.routes import files, inference, jobs, keys, models, service, tunesmith
from tunesmith.web.settings import ServerSettings
from tunesmith.web.ui import mount_ui
from tunesmith.workspace import Workspace

__all__ = ["ServerSettings", "create_app"]

# The order routes are matched in (``/v1/tunesmith/feedback/export`` before ``.../{feedback_id}``)
# and the order of the paths in the OpenAPI schema.
ROUTERS = (service.router, files.router, tunesmith.router, jobs.router, models.router, inference.router, keys.router)


def create_app(workspace: Workspace, settings: ServerSettings | None = None, db: Database | None = None) -> FastAPI:
    """The server over ``workspace`` (its database, unless ``db`` is given)."""
    settings = settings or ServerSettings()
    db = db or Database.for_workspace(workspace)
    app = FastAPI(title="tunesmith", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.workspace, app.state.settings, app.state.db = workspace, settings, db
    app.state.files = FileStore(db, workspace.files_dir, settings.max_upload_bytes)
    app.state.models = ModelServer(workspace, JobModels(workspace, db), settings.max_adapters, settings.max_waiting,
                                   settings.models, max_batch=settings.max_batch, engine=settings.engine, log=_log)
    app.state.log = RequestLog(db, settings.request_log)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])
    add_error_handlers(app)
    mount_ui(app)
    for router in ROUTERS:
        app.include_router(router)
    return app


def _log(message: str) -> None:
    """What the model server tells the operator (an export on first use, an engine fallback)."""
    print(message, file=sys.stderr, flush=True)
