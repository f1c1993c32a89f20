"""Reading request bodies, bounded before they are parsed: a JSON body up to the server's body
limit (413 beyond it, with or without a Content-Length) and then parsed by its route's pydantic
model (web/schemas.py), and a multipart upload streamed to the file store part by part.

Routes take their JSON body as a dependency, ``Annotated[Schema, Depends(JSONBody(Schema))]``,
and document it with ``openapi_extra=schemas.openapi_body(Schema)``: FastAPI never sees the
body itself, so it can neither spool it unbounded nor answer a bad one in its own error shape.
"""
# No ``from __future__ import annotations`` here: FastAPI reads the signature of
# ``JSONBody.__call__`` from an instance, which has no module globals to resolve a string
# annotation such as "Request" against.
import json
import time
from typing import Any

from fastapi import Request
from pydantic import BaseModel
from python_multipart.multipart import parse_options_header

from tunesmith.errors import APIError
from tunesmith.jobs.files import FileStore
from tunesmith.jobs.keys import Principal
from tunesmith.web import schemas

MULTIPART_OVERHEAD = 64 * 1024  # room for the part headers and the other fields of an upload


class JSONBody:
    """The dependency that reads a route's body and parses it as ``schema`` (a 400 naming the
    first field that does not fit)."""

    def __init__(self, schema: type[BaseModel]):
        self.schema = schema

    async def __call__(self, request: Request) -> Any:
        return schemas.parse(self.schema, await read_json(request))


async def read_json(request: Request) -> dict:
    """The body as a JSON object; a body that is not JSON, or nested past what the parser can
    take, is a 400. The body's ``model`` is kept for the request log."""
    request.state.started = time.perf_counter()
    limit = request.app.state.settings.max_body_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
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


def too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than the server's {limit:,}-byte limit.", "request_too_large")


async def multipart_upload(request: Request, files: FileStore, who: Principal) -> dict:
    """Stream the multipart body to disk part by part, enforcing the size limit as bytes arrive
    (starlette's form parser would spool the whole upload first)."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise APIError(400, "Expected a multipart/form-data upload with fields 'file' and 'purpose'.", "invalid_request_error")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > files.max_bytes + MULTIPART_OVERHEAD:
        raise APIError(413, f"File is larger than the {files.max_bytes:,}-byte upload limit.", "file_too_large", "file")
    return await files.save_multipart(request.stream(), options[b"boundary"], owner=who.key_id)
