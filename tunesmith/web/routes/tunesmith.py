"""tunesmith's own routes under ``/v1/tunesmith/`` (OpenAI has none of these): review feedback
on answers (jobs/feedback.py), finished runs and their evaluations (jobs/evaluations.py), their
exports (jobs/exports.py), run comparison, and the JSON schema of each recipe's settings, from
which the web UI builds its run form. API keys, the admin-only part of ``/v1/tunesmith/``, are
in routes/keys.py."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse

from tunesmith.config import recipe_schema as schema_of
from tunesmith.errors import APIError
from tunesmith.jobs import distillations, evaluations, exports, feedback
from tunesmith.web import schemas
from tunesmith.web.bodies import JSONBody
from tunesmith.web.deps import DatabaseDep, FilesDep, WorkspaceDep, principal
from tunesmith.web.pagination import page

router = APIRouter(dependencies=[Depends(principal)])

FeedbackBody = Annotated[schemas.FeedbackRequest, Depends(JSONBody(schemas.FeedbackRequest))]
FeedbackUpdateBody = Annotated[schemas.FeedbackUpdate, Depends(JSONBody(schemas.FeedbackUpdate))]
EvaluationBody = Annotated[schemas.EvaluationRequest, Depends(JSONBody(schemas.EvaluationRequest))]
ExportBody = Annotated[schemas.ExportRequest, Depends(JSONBody(schemas.ExportRequest))]
DistillationBody = Annotated[schemas.DistillationRequest, Depends(JSONBody(schemas.DistillationRequest))]
# Shown in a sandboxed frame by the UI; the page has no scripts and loads nothing.
REPORT_POLICY = {"Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'"}


# ── review feedback ────────────────────────────────────────────────────────────────────────
@router.post("/v1/tunesmith/feedback", openapi_extra=schemas.openapi_body(schemas.FeedbackRequest))
async def add_feedback(body: FeedbackBody, db: DatabaseDep):
    return await run_in_threadpool(feedback.add, db, body.model_dump(exclude_unset=True))


@router.get("/v1/tunesmith/feedback")
def list_feedback(db: DatabaseDep,
                  status: Annotated[str | None, Query(pattern="^(new|accepted|rejected|exported)$")] = None):
    return page(feedback.list_items(db, status), False)


@router.post("/v1/tunesmith/feedback/export")
def export_feedback(db: DatabaseDep, files: FilesDep):
    return feedback.export(db, files)


@router.post("/v1/tunesmith/feedback/{feedback_id}", openapi_extra=schemas.openapi_body(schemas.FeedbackUpdate))
async def update_feedback(feedback_id: str, body: FeedbackUpdateBody, db: DatabaseDep):
    return await run_in_threadpool(feedback.update, db, feedback_id, body.model_dump(exclude_unset=True))


# ── runs and their evaluations ─────────────────────────────────────────────────────────────
@router.get("/v1/tunesmith/runs")
def list_runs(workspace: WorkspaceDep, db: DatabaseDep):
    return page(evaluations.list_runs(workspace, db), False)


@router.get("/v1/tunesmith/runs/{run_id}")
def retrieve_run(run_id: str, workspace: WorkspaceDep, db: DatabaseDep):
    return evaluations.run_object(workspace, db, run_id)


@router.get("/v1/tunesmith/runs/{run_id}/evaluation")
def run_evaluation(run_id: str, workspace: WorkspaceDep):
    return evaluations.evaluation(workspace, run_id)


@router.post("/v1/tunesmith/runs/{run_id}/evaluation", openapi_extra=schemas.openapi_body(schemas.EvaluationRequest))
async def start_evaluation(run_id: str, body: EvaluationBody, workspace: WorkspaceDep, files: FilesDep):
    return await run_in_threadpool(evaluations.start, workspace, files, run_id, body.model_dump(exclude_unset=True))


@router.get("/v1/tunesmith/runs/{run_id}/evaluation/report.html")
def evaluation_page(run_id: str, workspace: WorkspaceDep):
    return HTMLResponse(evaluations.report_html(workspace, run_id), headers=REPORT_POLICY)


@router.get("/v1/tunesmith/runs/{run_id}/exports")
def run_exports(run_id: str, workspace: WorkspaceDep):
    return exports.exports(workspace, run_id)


@router.post("/v1/tunesmith/runs/{run_id}/exports", openapi_extra=schemas.openapi_body(schemas.ExportRequest))
async def start_export(run_id: str, body: ExportBody, workspace: WorkspaceDep):
    return await run_in_threadpool(exports.start, workspace, run_id, body.model_dump(exclude_unset=True))


@router.get("/v1/tunesmith/runs/{run_id}/exports/{name}/{filename}")
def export_text(run_id: str, name: str, filename: str, workspace: WorkspaceDep):
    """An export's parity.md, README.md (model card) or Modelfile, as plain text (never rendered)."""
    return PlainTextResponse(exports.export_text(workspace, run_id, name, filename),
                             headers={"X-Content-Type-Options": "nosniff"})


@router.get("/v1/tunesmith/compare")
def compare_runs(workspace: WorkspaceDep, runs: Annotated[list[str], Query(max_length=50)] = []):  # noqa: B006 - FastAPI copies defaults
    return evaluations.compare(workspace, runs)


# ── distillations (jobs/distillations.py) ─────────────────────────────────────────────────
@router.post("/v1/tunesmith/distillations", openapi_extra=schemas.openapi_body(schemas.DistillationRequest))
async def start_distillation(body: DistillationBody, workspace: WorkspaceDep, files: FilesDep):
    return await run_in_threadpool(distillations.start, workspace, files, body.model_dump(exclude_unset=True))


@router.get("/v1/tunesmith/distillations")
def list_distillations(workspace: WorkspaceDep):
    return page(distillations.list_all(workspace), False)


@router.get("/v1/tunesmith/distillations/{distillation_id}")
def retrieve_distillation(distillation_id: str, workspace: WorkspaceDep):
    return distillations.retrieve(workspace, distillation_id)


# ── recipes ────────────────────────────────────────────────────────────────────────────────
@router.get("/v1/tunesmith/schema/{recipe}")
def recipe_schema(recipe: str):
    """The JSON schema of a recipe's settings (types, ranges, defaults, descriptions), from
    which the web UI builds its run form."""
    found = schema_of(recipe)
    if found is None:
        raise APIError(404, f"no recipe '{recipe}' (sft, classify, dpo)", "not_found", "recipe")
    return found
