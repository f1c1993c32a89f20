"""OpenAI's models (``/v1/models``): every name the model server can answer for (pulled base
models, runs, aliases), one by name, and deletion (a base model only with an admin key)."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from tunesmith.web.deps import ModelsDep, PrincipalDep, forbidden, principal
from tunesmith.web.pagination import page

router = APIRouter(dependencies=[Depends(principal)])


@router.get("/v1/models")
def list_models(models: ModelsDep):
    return page([_model_object(t, models.engine_of(t)) for t in models.targets()], False)


@router.get("/v1/models/{model:path}")
def retrieve_model(model: str, models: ModelsDep):
    target = models.resolve(model)
    return _model_object(target, models.engine_of(target))


@router.delete("/v1/models/{model:path}")
def delete_model(model: str, who: PrincipalDep, models: ModelsDep):
    target = models.resolve(model)
    if target.owned_by == "system" and target.alias_of is None and not who.admin:
        raise forbidden("deleting a base model")
    return models.delete(model)


def _model_object(target, engine: str) -> dict:
    """OpenAI's model object, and (an extra field the SDK keeps) the engine that serves it."""
    return {"id": target.name, "object": "model", "created": target.created, "owned_by": target.owned_by,
            "engine": engine}
