"""The server itself: ``/health`` (no key: for a load balancer or supervisor), the inference
status, and the OpenAPI schema at ``/v1/openapi.json``, behind a key like the rest (no ``/docs``
page: FastAPI's loads its scripts from a CDN, and this server runs offline)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from tunesmith.web.deps import ModelsDep, principal

router = APIRouter()


@router.get("/health", include_in_schema=False)
def health():
    """For a load balancer or supervisor: no key, nothing but whether the process answers."""
    return {"status": "ok"}


@router.get("/v1/tunesmith/status", dependencies=[Depends(principal)])
def status(models: ModelsDep):
    """Inference admission (requests admitted / capacity), models and adapters loaded."""
    return {"object": "tunesmith.status", "inference": models.status()}


@router.get("/v1/openapi.json", dependencies=[Depends(principal)], include_in_schema=False)
def openapi_schema(request: Request):
    return request.app.openapi()
