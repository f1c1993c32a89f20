"""API keys (``/v1/tunesmith/keys``), admin keys only: list, create (the secret is shown once,
in this answer) and revoke. Keys are stored hashed (jobs/keys.py)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from tunesmith.errors import APIError
from tunesmith.jobs import keys
from tunesmith.web import schemas
from tunesmith.web.bodies import JSONBody
from tunesmith.web.deps import DatabaseDep, admin
from tunesmith.web.pagination import page

router = APIRouter(dependencies=[Depends(admin)])

KeyBody = Annotated[schemas.KeyRequest, Depends(JSONBody(schemas.KeyRequest))]


@router.get("/v1/tunesmith/keys")
def list_keys(db: DatabaseDep):
    return page(keys.list_keys(db), False)


@router.post("/v1/tunesmith/keys", openapi_extra=schemas.openapi_body(schemas.KeyRequest))
async def create_key(body: KeyBody, db: DatabaseDep):
    secret, info = await run_in_threadpool(keys.create_key, db, body.name, body.role)
    return info | {"secret": secret}


@router.delete("/v1/tunesmith/keys/{key_id}")
def revoke_key(key_id: str, db: DatabaseDep):
    if not keys.revoke_key(db, key_id):
        raise APIError(404, f"No active API key with id '{key_id}' exists.", "api_key_not_found", "key_id")
    return {"id": key_id, "object": "tunesmith.api_key", "deleted": True}
