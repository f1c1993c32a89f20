"""OpenAI's files (``/v1/files``: upload, list, retrieve, content, delete) over jobs/files.py,
and tunesmith's own routes on an uploaded file: its dataset card, ``clean`` and ``split``
(web/prepare.py). Any key may upload and read; only the owner or an admin deletes."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from tunesmith import api
from tunesmith.errors import APIError
from tunesmith.jobs.files import file_object
from tunesmith.web import prepare, schemas
from tunesmith.web.bodies import JSONBody, multipart_upload
from tunesmith.web.deps import FilesDep, ModelsDep, PrincipalDep, WorkspaceDep, forbidden, principal
from tunesmith.web.pagination import page

router = APIRouter(dependencies=[Depends(principal)])

CleanBody = Annotated[schemas.CleanRequest, Depends(JSONBody(schemas.CleanRequest))]
SplitBody = Annotated[schemas.SplitRequest, Depends(JSONBody(schemas.SplitRequest))]


@router.post("/v1/files")
async def create_file(request: Request, who: PrincipalDep, files: FilesDep):
    return await multipart_upload(request, files, who)


@router.get("/v1/files")
def list_files(files: FilesDep, purpose: Annotated[str | None, Query(max_length=32)] = None,
               limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
               after: Annotated[str | None, Query(max_length=64)] = None,
               order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc"):
    data, more = files.list(purpose, limit, after, order)
    return page(data, more)


@router.get("/v1/files/{file_id}")
def retrieve_file(file_id: str, files: FilesDep):
    return file_object(files.get(file_id))


@router.get("/v1/files/{file_id}/card")
def file_card(file_id: str, files: FilesDep, models: ModelsDep, workspace: WorkspaceDep,
              model: Annotated[str | None, Query(max_length=256)] = None,
              max_length: Annotated[int, Query(ge=16, le=131072)] = 1024):
    """tunesmith's own: the dataset card of an uploaded file (counts, token lengths under a
    base model the server has, labels, personal data found), or its problems."""
    row = files.get(file_id)
    if model is not None and model not in {t.name for t in models.targets() if t.owned_by == "system"}:
        raise APIError(404, f"The model '{model}' does not exist", "model_not_found", "model")
    report, card = api.check_data(files.path(row.id), model=model, max_length=max_length, workspace=workspace)
    problems = report.summary(limit=50).replace(str(files.path(row.id)), row.filename).splitlines()
    card_dict = card.to_dict() | {"path": row.filename} if card else None
    return {"file_id": row.id, "filename": row.filename, "valid": report.ok, "problems": [] if report.ok else problems,
            "card": card_dict}


@router.post("/v1/files/{file_id}/clean", openapi_extra=schemas.openapi_body(schemas.CleanRequest))
async def clean_file(file_id: str, body: CleanBody, files: FilesDep):
    """tunesmith's own: `data clean` on an uploaded file; the cleaned file and its rejects are new files."""
    return await run_in_threadpool(prepare.clean, files, file_id, body.model_dump(exclude_unset=True))


@router.post("/v1/files/{file_id}/split", openapi_extra=schemas.openapi_body(schemas.SplitRequest))
async def split_file(file_id: str, body: SplitBody, files: FilesDep):
    """tunesmith's own: `data split` on an uploaded file; each split is a new file."""
    return await run_in_threadpool(prepare.split, files, file_id, body.model_dump())


@router.get("/v1/files/{file_id}/content")
def file_content(file_id: str, files: FilesDep):
    row = files.get(file_id)
    return FileResponse(files.path(row.id), media_type="application/octet-stream", filename=row.filename)


@router.delete("/v1/files/{file_id}")
def delete_file(file_id: str, who: PrincipalDep, files: FilesDep):
    row = files.get(file_id)
    if row.owner is not None and row.owner != who.key_id and not who.admin:
        raise forbidden("deleting another key's file")
    return files.delete(file_id)
