"""Fine-tuning jobs as OpenAI defines them: creation and validation, the job / event / checkpoint
objects, and the recipe config a job trains with. The queue is the ``jobs`` table; workers
(server/worker.py) claim and run them."""
from __future__ import annotations

import json
import math
import re
import secrets
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from tunesmith.config import RecipeConfig, default_learning_rate, load_config
from tunesmith.errors import APIError, ConfigError, not_found
from tunesmith.jobs.db import Database, EventRow, FileRow, JobRow
from tunesmith.training.checkpoints import checkpoints_by_step, problems_with
from tunesmith.training.recipes import DPO, recipe_of_job_method
from tunesmith.workspace import Workspace

ORGANIZATION = "tunesmith"
DPO_BETA = 0.1  # "auto" beta: TRL's and the DPO paper's usual value
METHODS = ("supervised", "dpo")
TERMINAL = {"succeeded", "failed", "cancelled"}


def auto_epochs(n_examples: int) -> int:
    """OpenAI's cookbook rule: 3 epochs, more for tiny sets (≥100 example passes), fewer for huge ones.

    >>> auto_epochs(10), auto_epochs(500), auto_epochs(100_000)
    (10, 3, 1)
    """
    if n_examples * 3 < 100:
        return min(25, 100 // max(n_examples, 1))
    if n_examples * 3 > 25_000:
        return max(1, 25_000 // n_examples)
    return 3


def create_job(db: Database, body: dict[str, Any], recipe_settings: dict | None = None) -> dict:
    """Validate the request, record the job in ``validating_files``, check its files (quick: they
    were validated on upload) and move it to ``queued`` — or ``failed`` with the file's first
    problem, before any compute.

    ``recipe_settings`` come from tunesmith itself, not from a request: a retraining repeats a
    run's whole recipe, a classifier's included, so these may name the recipe; API callers get
    OpenAI's sft / dpo jobs with ``tunesmith.settings`` on top."""
    job = new_job(body, recipe_settings)
    training_file = job.training_file
    with db.session() as session:
        for param in ("training_file", "validation_file"):
            file_id = getattr(job, param)
            if file_id and session.get(FileRow, file_id) is None:
                raise APIError(400, f"invalid {param}: {file_id}", "invalid_request_error", param)
        session.add(job)
    add_event(db, job.id, f"Created fine-tuning job: {job.id}")
    add_event(db, job.id, f"Validating training file: {training_file}")
    error = _file_problem(db, job)
    outcome = {"status": "failed", "error": error, "finished_at": int(time.time())} if error else {"status": "queued"}
    with db.session() as session:  # unless cancelled meanwhile
        session.execute(update(JobRow).where(JobRow.id == job.id, JobRow.status == "validating_files").values(**outcome))
    if error:
        add_event(db, job.id, f"Job failed: {error['message']}", level="error")
    else:
        add_event(db, job.id, "Files validated, moving job to queued state")
    return job_object(get_job(db, job.id))


def new_job(body: dict[str, Any], recipe_settings: dict | None = None) -> JobRow:
    """The job a request describes, every field checked (a 400 naming the first bad one), not
    yet stored: ``create_job`` stores it; a pre-flight estimate (jobs/estimates.py) only probes it."""
    model, training_file = body.get("model"), body.get("training_file")
    if not model or not isinstance(model, str):
        raise APIError(400, "Missing required parameter: 'model'.", "missing_required_parameter", "model")
    if not training_file:
        raise APIError(400, "Missing required parameter: 'training_file'.", "missing_required_parameter",
                       "training_file")
    suffix = body.get("suffix")
    if suffix is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", str(suffix)):
        raise APIError(400, "suffix must be 1-64 characters of letters, digits, '-' or '_'.", "invalid_value", "suffix")
    method = _method(body)
    settings = _settings(body, method) if recipe_settings is None else _checked(recipe_settings, method)
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16):
        raise APIError(400, "metadata must be an object of at most 16 string pairs.", "invalid_value", "metadata")
    return JobRow(id="ftjob-" + secrets.token_hex(12), created_at=int(time.time()), status="validating_files",
                  model=model, training_file=training_file, validation_file=body.get("validation_file"),
                  suffix=suffix, seed=int(body["seed"]) if body.get("seed") is not None else secrets.randbelow(2**31),
                  method=method, job_metadata=metadata, settings=settings)


def _method(body: dict[str, Any]) -> dict:
    """The job's method with its hyperparameters checked: each ``"auto"`` or a finite number in
    its range (a bool is not a number here, and ``1e999`` — valid JSON that overflows to inf — is
    refused, since a stored inf would break every later listing of the jobs)."""
    method = body.get("method") or {"type": "supervised"}
    if not isinstance(method, dict):
        raise APIError(400, "method must be an object.", "invalid_value", "method")
    kind = method.get("type", "supervised")
    if kind not in METHODS:
        raise APIError(400, f"method type '{kind}' is not supported (supported: {', '.join(METHODS)}).",
                       "invalid_value", "method")
    given = (method.get(kind) or {}).get("hyperparameters") or body.get("hyperparameters") or {}
    if not isinstance(given, dict):
        raise APIError(400, "hyperparameters must be an object.", "invalid_value", "hyperparameters")
    bounds = HYPERPARAMETER_BOUNDS | (DPO_BOUNDS if kind == "dpo" else {})
    unknown = sorted(set(given) - set(bounds))
    if unknown:
        raise APIError(400, f"unknown hyperparameter {unknown[0]} (known: {', '.join(bounds)}).", "invalid_value",
                       unknown[0])
    hyper = {key: _bounded(key, given.get(key), *bound) for key, bound in bounds.items()}
    return {"type": kind, kind: {"hyperparameters": hyper}}


# name: (integer only, lowest, highest, whether the lowest itself is allowed)
HYPERPARAMETER_BOUNDS = {"n_epochs": (True, 1, 50, True), "batch_size": (True, 1, 256, True),
                         "learning_rate_multiplier": (False, 0, 100, False)}
DPO_BOUNDS = {"beta": (False, 0, 2, False)}


def _bounded(key: str, value: Any, integer: bool, low: float, high: float, low_included: bool) -> Any:
    """``value`` when it is ``"auto"`` (or absent) or a finite number within the bounds; else a 400
    naming the field.

    >>> _bounded("n_epochs", 3, True, 1, 50, True), _bounded("beta", None, False, 0, 2, False)
    (3, 'auto')
    """
    if value is None or value == "auto":
        return "auto"
    number = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if number and math.isfinite(value) and (low <= value if low_included else low < value) and value <= high:
        return value
    kind = f"an integer {low}-{high}" if integer else f"a number in {'[' if low_included else '('}{low}, {high}]"
    raise APIError(400, f"{key} must be 'auto' or {kind}.", "invalid_value", key)


# What an API caller may set through tunesmith.settings / recipe_yaml: training hyperparameters,
# nothing else. Refused by omission: anything naming a path or a URL (data files, replay.data,
# chat templates, tracking.tracking_uri: they would make the worker read server files or send
# data anywhere), how the server runs (training.threads, strategy, save_total_limit) and what
# the job's own fields decide (model, recipe, run_name). An allow-list, so that a field added to
# the recipe schema later is refused until someone decides it is safe.
_FIXED_SETTINGS = {"recipe", "model", "run_name"}
_FIXED_DATA = {"train", "validation", "test"}
API_SETTINGS: dict[str, set[str] | None] = {
    "method": None, "pooling": None, "class_weights": None,
    "lora": {"r", "alpha", "dropout", "target_modules"},
    "prompt_learning": {"num_virtual_tokens"},
    "preference": {"algorithm", "beta"},
    "data": {"max_length", "train_on", "format", "validation_fraction", "min_examples"},
    "training": {"epochs", "max_steps", "batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler",
                 "warmup_ratio", "weight_decay", "max_grad_norm", "eval_steps", "save_steps",
                 "early_stopping_patience", "logging_steps", "seed", "precision", "gradient_checkpointing",
                 "group_by_length", "packing", "pack_length"},
}


# The hyperparameters' own limits hold for their recipe-settings spelling too.
API_MAXIMA = {"training.epochs": HYPERPARAMETER_BOUNDS["n_epochs"][2],
              "training.batch_size": HYPERPARAMETER_BOUNDS["batch_size"][2]}


def _settings(body: dict[str, Any], method: dict) -> dict | None:
    """tunesmith's extension of a job: recipe settings beyond OpenAI's hyperparameters, as an
    object (``{"tunesmith": {"settings": {"method": "dora", "lora": {"r": 8}}}}``) or as recipe
    YAML (``{"tunesmith": {"recipe_yaml": "..."}}``); limited to ``API_SETTINGS`` and checked
    against the recipe's schema now, every problem reported at once, so a bad value fails the
    request, not the job."""
    import yaml

    extension = body.get("tunesmith") or {}
    if not isinstance(extension, dict):
        raise APIError(400, "tunesmith must be an object.", "invalid_value", "tunesmith")
    settings = extension.get("settings")
    if extension.get("recipe_yaml") is not None:
        try:
            settings = yaml.safe_load(str(extension["recipe_yaml"])) or {}
        except yaml.YAMLError as e:
            raise APIError(400, f"recipe_yaml is not valid YAML: {e}", "invalid_value", "tunesmith.recipe_yaml") from None
    if settings is None:
        return None
    if not isinstance(settings, dict):
        raise APIError(400, "tunesmith.settings must be an object.", "invalid_value", "tunesmith.settings")
    refused = _refused(settings)
    allowed = {k: ({f: v for f, v in value.items() if f"{k}.{f}" not in refused} if isinstance(value, dict) else value)
               for k, value in settings.items() if k not in refused}
    problems = [f"{name}: {why}" for name, why in sorted(refused.items())] + _schema_problems(allowed, method)
    if problems:
        raise APIError(400, "invalid tunesmith.settings: " + "; ".join(problems), "invalid_value", "tunesmith.settings")
    return settings


def _refused(settings: dict) -> dict[str, str]:
    """Each field of ``settings`` an API caller may not set, with the reason.

    >>> _refused({"method": "dora", "tracking": {"tracking_uri": "http://x"}, "training": {"threads": 2}})
    {'tracking': 'not settable through the API (only training settings are)', 'training.threads': 'not settable through the API (only training settings are)'}
    """
    why = "not settable through the API (only training settings are)"
    refused = {}
    for key, value in settings.items():
        if key not in API_SETTINGS:
            refused[key] = "comes from the job's model and files" if key in _FIXED_SETTINGS else why
        elif API_SETTINGS[key] is not None:
            if not isinstance(value, dict):
                refused[key] = "must be an object"
                continue
            for field_name, field_value in value.items():
                name = f"{key}.{field_name}"
                if field_name not in API_SETTINGS[key]:
                    refused[name] = "comes from the job's files" if key == "data" and field_name in _FIXED_DATA else why
                elif not _finite(field_value):
                    refused[name] = "must be a finite number"
                elif name in API_MAXIMA and _number(field_value) and field_value > API_MAXIMA[name]:
                    refused[name] = f"at most {API_MAXIMA[name]} through the API (as n_epochs and batch_size)"
        elif not _finite(value):
            refused[key] = "must be a finite number"
    return refused


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _schema_problems(settings: dict, method: dict) -> list[str]:
    probe = JobRow(id="ftjob-check", model="model", training_file="file", validation_file=None, seed=0,
                   method=method, settings=settings)
    try:
        job_config(probe, Path("."), 100)
    except ConfigError as e:
        return [p.removeprefix("<overrides>: ") for p in e.problems] or [str(e)]
    return []


def _checked(settings: dict, method: dict) -> dict:
    """Settings from tunesmith itself (a retraining): the whole recipe schema, no allow-list."""
    problems = _schema_problems(settings, method)
    if problems:
        raise APIError(400, "invalid tunesmith.settings: " + "; ".join(problems), "invalid_value", "tunesmith.settings")
    return settings


def _merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def hyperparameters(method: dict) -> dict:
    """The hyperparameters of a job's method (``{"type": T, T: {"hyperparameters": ...}}``)."""
    return method[method["type"]]["hyperparameters"]


def _file_problem(db: Database, job: JobRow) -> dict | None:
    with db.session() as session:
        for param in ("training_file", "validation_file"):
            file_id = getattr(job, param)
            row = session.get(FileRow, file_id) if file_id else None
            if row is not None and row.status == "error":
                return {"code": f"invalid_{param}", "param": param,
                        "message": f"The job failed due to an invalid {param.replace('_', ' ')} ({file_id}): "
                                   f"{row.status_details}"}
    return None


def resolved_hyperparameters(job: JobRow, n_examples: int) -> dict:
    hyper = dict(hyperparameters(job.method))
    if hyper.get("beta") == "auto":
        hyper["beta"] = DPO_BETA
    if hyper["n_epochs"] == "auto":
        hyper["n_epochs"] = auto_epochs(n_examples)
    if hyper["batch_size"] == "auto":
        hyper["batch_size"] = max(1, min(8, n_examples // 10 or 1))
    if hyper["learning_rate_multiplier"] == "auto":
        hyper["learning_rate_multiplier"] = 1.0
    return hyper


def job_config(job: JobRow, files_dir: Path, n_examples: int) -> tuple[RecipeConfig, dict]:
    """The recipe a job trains with: sft, or dpo for ``method.type: dpo`` (LoRA on the base model,
    checkpoints every epoch)."""
    hyper = resolved_hyperparameters(job, n_examples)
    steps_per_epoch = max(1, -(-n_examples // hyper["batch_size"]))
    recipe = recipe_of_job_method(job.method["type"])
    dpo = recipe is DPO
    # The multiplier scales the recipe's own default for the method the job trains with (a dpo
    # job with ``tunesmith.settings.method: full`` starts from the full fine-tune's rate, as the CLI does).
    method = (job.settings or {}).get("method", "lora")
    rate = default_learning_rate(recipe.config, method) * hyper["learning_rate_multiplier"]
    base = {
        "recipe": recipe.name, **({"preference": {"beta": hyper["beta"]}} if dpo else {}),
        "model": job.model, "run_name": job.id,
        "data": {"train": str(files_dir / job.training_file),
                 "validation": str(files_dir / job.validation_file) if job.validation_file else None,
                 "validation_fraction": 0.0, "min_examples": 10},
        "training": {"epochs": hyper["n_epochs"], "batch_size": hyper["batch_size"],
                     "learning_rate": rate, "seed": job.seed,
                     "eval_steps": steps_per_epoch, "save_steps": steps_per_epoch, "save_total_limit": 3,
                     "logging_steps": max(1, min(10, steps_per_epoch))},
    }
    return load_config(None, [], base=_merged(base, job.settings or {})), hyper


def fine_tuned_name(job: JobRow) -> str:
    base = Path(job.model).name if "/" in job.model else job.model
    return f"ft:{base}:{ORGANIZATION}:{job.suffix or ''}:{job.id.removeprefix('ftjob-')[:8]}"


def get_job(db: Database, job_id: str) -> JobRow:
    with db.session() as session:
        return _job_in(session, job_id)


def _job_in(session, job_id: str) -> JobRow:
    row = session.get(JobRow, job_id)
    if row is None:
        raise not_found("fine-tuning job", job_id, "fine_tuning_job_not_found")
    return row


def list_jobs(db: Database, after: str | None, limit: int, metadata: dict[str, str]) -> tuple[list[dict], bool]:
    with db.session() as session:
        rows = list(session.scalars(select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id.desc())))
    if metadata:
        rows = [r for r in rows if isinstance(r.job_metadata, dict)
                and all(r.job_metadata.get(k) == v for k, v in metadata.items())]
    if after:
        ids = [r.id for r in rows]
        rows = rows[ids.index(after) + 1:] if after in ids else []
    return [job_object(r) for r in rows[:limit]], len(rows) > limit


def cancel_job(db: Database, job_id: str) -> dict:
    """A waiting job is cancelled at once; a running one is asked to stop: its trainer stops after
    the current step, or its worker stops the trainer after a grace period (a hung step)."""
    def decide(row: JobRow) -> tuple[dict, str]:
        if row.status in TERMINAL:
            raise APIError(400, f"Job {job_id} is already {row.status} and cannot be cancelled.", "invalid_request_error")
        if row.status == "running":
            return {"stop_requested": "cancel"}, "Job cancellation requested"
        return {"stop_requested": "cancel", "status": "cancelled", "finished_at": int(time.time()),
                "estimated_finish": None}, "Job cancelled"
    return _change(db, job_id, decide)


def pause_job(db: Database, job_id: str) -> dict:
    """A queued job waits; a running one stops after its next step, writing a checkpoint first."""
    def decide(row: JobRow) -> tuple[dict, str]:
        if row.status not in ("queued", "running"):
            raise APIError(400, f"Job {job_id} is {row.status}; only queued or running jobs can be paused.",
                           "invalid_request_error")
        if row.stop_requested == "cancel":
            raise APIError(400, f"Job {job_id} is being cancelled and cannot be paused.", "invalid_request_error")
        if row.status == "queued":
            return {"status": "paused"}, "Job paused"
        return {"stop_requested": "pause"}, "Job pause requested"
    return _change(db, job_id, decide)


def resume_job(db: Database, job_id: str) -> dict:
    """A paused job goes back to the queue; a worker continues it from its last checkpoint."""
    def decide(row: JobRow) -> tuple[dict, str]:
        if row.status != "paused":
            raise APIError(400, f"Job {job_id} is {row.status}; only paused jobs can be resumed.", "invalid_request_error")
        return {"status": "queued", "stop_requested": None}, "Job resumed: queued again"
    return _change(db, job_id, decide)


class _Changed(Exception):
    """The job changed between reading it and writing: decide again on the new state."""


def _change(db: Database, job_id: str, decide) -> dict:
    """Apply ``decide(row)``'s values and event only if the job is still in the status and lease
    ``decide`` saw (a conditional UPDATE), deciding again when a worker moved the job in between
    (claimed it, finished it, requeued it). So a cancel can never be lost to a concurrent claim,
    nor a finished job be marked cancelled."""
    def attempt(session) -> None:
        row = _job_in(session, job_id)
        values, message = decide(row)
        changed = session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == row.status,
                                                       JobRow.lease_generation == row.lease_generation).values(**values))
        if changed.rowcount != 1:
            raise _Changed()
        session.add(event_row(job_id, message))

    for _ in range(10):
        try:
            db.transaction(attempt)
            return job_object(get_job(db, job_id))
        except _Changed:
            continue
    raise APIError(409, f"Job {job_id} is changing state; try again.", "conflict")


def add_event(db: Database, job_id: str, message: str, level: str = "info", type_: str = "message",
              data: dict | None = None) -> None:
    with db.session() as session:
        session.add(event_row(job_id, message, level, type_, data))


def event_row(job_id: str, message: str, level: str = "info", type_: str = "message",
              data: dict | None = None) -> EventRow:
    """An event; a non-finite number in ``data`` (a diverged loss) is stored as null, which every
    database's JSON accepts (PostgreSQL's refuses NaN and Infinity)."""
    return EventRow(id="ftevent-" + secrets.token_hex(12), job_id=job_id, created_at=int(time.time()),
                    level=level, message=message, type=type_, data=_json_safe(data or {}))


def list_events(db: Database, job_id: str, after: str | None, limit: int) -> tuple[list[dict], bool]:
    get_job(db, job_id)
    with db.session() as session:
        rows = list(session.scalars(select(EventRow).where(EventRow.job_id == job_id).order_by(EventRow.seq.desc())))
    if after:
        ids = [r.id for r in rows]
        rows = rows[ids.index(after) + 1:] if after in ids else []
    events = [{"id": r.id, "object": "fine_tuning.job.event", "created_at": r.created_at, "level": r.level,
               "message": r.message, "type": r.type, "data": r.data or {}} for r in rows[:limit]]
    return events, len(rows) > limit


def list_checkpoints(db: Database, workspace: Workspace, job_id: str, after: str | None,
                     limit: int) -> tuple[list[dict], bool]:
    job = get_job(db, job_id)
    items = [checkpoint_object(job, step, path) for step, path in reversed(checkpoint_dirs(workspace, job))]
    if after:
        ids = [c["id"] for c in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    return items[:limit], len(items) > limit


def checkpoint_dirs(workspace: Workspace, job: JobRow) -> list[tuple[int, Path]]:
    """The job's sound checkpoints (a half-written one is never offered as a model)."""
    if not job.run_id:
        return []
    directory = workspace.run_dir(job.run_id) / "checkpoints"
    return [(step, path) for step, path in checkpoints_by_step(directory) if not problems_with(path)]


def checkpoint_object(job: JobRow, step: int, path: Path) -> dict:
    metrics = _metrics_at(path.parent.parent / "metrics.jsonl", step)
    return {"id": f"ftckpt_{job.id.removeprefix('ftjob-')[:12]}_{step}", "object": "fine_tuning.job.checkpoint",
            "created_at": int(path.stat().st_mtime), "fine_tuning_job_id": job.id, "step_number": step,
            "fine_tuned_model_checkpoint": f"{fine_tuned_name(job)}:ckpt-step-{step}", "metrics": metrics}


def _metrics_at(path: Path, step: int) -> dict:
    metrics: dict[str, Any] = {"step": step}
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("step") == step:
                if "loss" in record:
                    metrics["train_loss"] = record["loss"]
                if "eval_loss" in record:
                    metrics["valid_loss"] = record["eval_loss"]
    return metrics


def job_object(row: JobRow) -> dict:
    """The OpenAI job object. Total over whatever a row holds (a malformed method, a non-finite
    number written by an older version): one bad row must never make a listing fail."""
    method = row.method if isinstance(row.method, dict) else {}
    return _json_safe({
        "id": row.id, "object": "fine_tuning.job", "created_at": row.created_at, "finished_at": row.finished_at,
        "model": row.model, "fine_tuned_model": row.fine_tuned_model, "organization_id": ORGANIZATION,
        "status": row.status, "error": row.error, "hyperparameters": _stored_hyperparameters(method), "method": method,
        "training_file": row.training_file, "validation_file": row.validation_file, "result_files": row.result_files or [],
        "trained_tokens": row.trained_tokens, "seed": row.seed, "suffix": row.suffix,
        "user_provided_suffix": row.suffix, "estimated_finish": row.estimated_finish if row.status == "running" else None,
        "integrations": [], "metadata": row.job_metadata,
        **({"tunesmith": {"settings": row.settings}} if row.settings else {}),
    })


def _stored_hyperparameters(method: dict) -> dict:
    settings = method.get(str(method.get("type")))
    hyper = settings.get("hyperparameters") if isinstance(settings, dict) else None
    return hyper if isinstance(hyper, dict) else {}


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no inf or NaN).

    >>> _json_safe({"a": [float("inf"), 1.5], "b": float("nan")})
    {'a': [None, 1.5], 'b': None}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
