"""OpenAI's fine-tuning jobs (``/v1/fine_tuning/jobs``: create, list, retrieve, cancel, events,
checkpoints, plus tunesmith's pause and resume) over the job queue in jobs/fine_tuning.py,
which checks a job's settings; workers run the jobs (jobs/worker.py). ``/v1/tunesmith/estimates``
takes a job's body and answers the pre-flight estimate of that job (jobs/estimates.py)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from tunesmith.errors import APIError
from tunesmith.jobs import estimates, fine_tuning
from tunesmith.serving.model_server import ModelServer
from tunesmith.web import schemas
from tunesmith.web.bodies import JSONBody
from tunesmith.web.deps import DatabaseDep, FilesDep, ModelsDep, WorkspaceDep, principal
from tunesmith.web.pagination import page

router = APIRouter(dependencies=[Depends(principal)])

JobBody = Annotated[schemas.FineTuningJobRequest, Depends(JSONBody(schemas.FineTuningJobRequest))]
After = Annotated[str | None, Query(max_length=64)]


@router.post("/v1/fine_tuning/jobs", openapi_extra=schemas.openapi_body(schemas.FineTuningJobRequest))
async def create_job(body: JobBody, models: ModelsDep, files: FilesDep, db: DatabaseDep):
    await _check_job_inputs(body, models, files)
    return await run_in_threadpool(fine_tuning.create_job, db, body.model_dump(exclude_unset=True))


@router.post("/v1/tunesmith/estimates", openapi_extra=schemas.openapi_body(schemas.FineTuningJobRequest))
async def estimate_job(body: JobBody, models: ModelsDep, files: FilesDep, workspace: WorkspaceDep):
    """Will this job fit, and how long will it take? Its body, probed for a few steps; nothing stored."""
    await _check_job_inputs(body, models, files)
    return await run_in_threadpool(estimates.estimate_job, workspace, body.model_dump(exclude_unset=True))


async def _check_job_inputs(body: schemas.FineTuningJobRequest, models: ModelServer, files) -> None:
    await run_in_threadpool(_require_base_model, models, body.model)
    for param in ("training_file", "validation_file"):
        if getattr(body, param) is not None:
            await run_in_threadpool(files.require_trainable, getattr(body, param), param)
    await run_in_threadpool(files.require_examples, body.training_file, "training_file")


@router.get("/v1/fine_tuning/jobs")
def list_jobs(request: Request, db: DatabaseDep, after: After = None,
              limit: Annotated[int, Query(ge=1, le=100)] = 20):
    metadata = {k[9:-1]: v for k, v in request.query_params.items() if k.startswith("metadata[")}
    data, more = fine_tuning.list_jobs(db, after, limit, metadata)
    return page(data, more)


@router.get("/v1/fine_tuning/jobs/{job_id}")
def retrieve_job(job_id: str, db: DatabaseDep):
    return fine_tuning.job_object(fine_tuning.get_job(db, job_id))


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(job_id: str, db: DatabaseDep):
    return fine_tuning.cancel_job(db, job_id)


@router.post("/v1/fine_tuning/jobs/{job_id}/pause")
def pause_job(job_id: str, db: DatabaseDep):
    return fine_tuning.pause_job(db, job_id)


@router.post("/v1/fine_tuning/jobs/{job_id}/resume")
def resume_job(job_id: str, db: DatabaseDep):
    return fine_tuning.resume_job(db, job_id)


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
def job_events(job_id: str, db: DatabaseDep, after: After = None, limit: Annotated[int, Query(ge=1, le=100)] = 20):
    data, more = fine_tuning.list_events(db, job_id, after, limit)
    return page(data, more)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
def job_checkpoints(job_id: str, db: DatabaseDep, workspace: WorkspaceDep, after: After = None,
                    limit: Annotated[int, Query(ge=1, le=100)] = 10):
    data, more = fine_tuning.list_checkpoints(db, workspace, job_id, after, limit)
    return page(data, more, with_ids=True)


def _require_base_model(models: ModelServer, name: str) -> None:
    """Only models the server already has: a name from the request never becomes a path."""
    bases = {t.name for t in models.targets() if t.is_base}
    if name not in bases:
        raise APIError(400, f"Model {name!r} is not available for fine-tuning; available: "
                       f"{', '.join(sorted(bases)) or 'none (pull one with `tunesmith models pull`)'}.",
                       "model_not_available", "model")
