"""One attempt at a fine-tuning job: the trainer, run by a worker (server/worker.py) as a child
process of its own, ``python -m tunesmith.jobs.trainer JOB_ID GENERATION``, or in the worker's
process (``Worker(isolate=False)``).

It trains the job's recipe under the worker's lease (server/leases.py) and records the outcome:
``succeeded``, ``cancelled`` or ``paused`` as asked between steps, or ``failed`` with a code that
says why (``training_diverged``, ``disk_full``, ``out_of_memory``, ``training_failed``). Every write
is conditional on the lease: at each step the trainer checks it, and once another worker has
taken the job over (db.LeaseLost) it stops at once and writes nothing more, neither to the
database nor to the run directory, which belongs to the new holder.
"""
from __future__ import annotations

import errno
import hashlib
import secrets
import sys
import time
from pathlib import Path

from rich.console import Console
from transformers import TrainerCallback

from tunesmith.data.validate import validate_file
from tunesmith.errors import DiskFull, TrainingDiverged
from tunesmith.jobs.db import Database, DatabaseUnavailable, FileRow, JobRow, LeaseLost, retrying
from tunesmith.jobs.fine_tuning import add_event, fine_tuned_name, get_job, job_config
from tunesmith.jobs.leases import Lease
from tunesmith.jobs.promotion import judge_job
from tunesmith.runs import Run, new_run
from tunesmith.tracking.tracker import read_events
from tunesmith.training.recipes import recipe_for
from tunesmith.workspace import Workspace

LEASE_LOST_EXIT = 75  # EX_TEMPFAIL: the job went to another worker; nothing was recorded
ESTIMATE_EVERY_SECONDS = 5.0


class JobProgress(TrainerCallback):
    """Between steps: the lease is checked (LeaseLost stops training at once), a requested
    cancel or pause stops training (a pause after saving a checkpoint), metrics become events."""

    def __init__(self, lease: Lease):
        self.lease = lease
        self.started, self.last_estimate, self.first_step, self.first_tokens = time.time(), 0.0, 0, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.first_step = time.time(), state.global_step
        self.first_tokens = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        try:
            stop = self._check_in(state)
        except DatabaseUnavailable:
            return  # the worker keeps the lease; training goes on and checks in at the next step
        if stop:
            control.should_training_stop = True
            control.should_save = stop == "pause"  # a paused job continues from this step

    def _check_in(self, state) -> str | None:
        now = time.time()
        with self.lease.session() as session:
            row = session.get(JobRow, self.lease.job_id, populate_existing=True)
            row.heartbeat_at = now  # a step finished: the worker does not take the trainer for hung
            if now - self.last_estimate >= ESTIMATE_EVERY_SECONDS:
                self.last_estimate = now
                done = max(state.global_step - self.first_step, 1)
                row.estimated_finish = int(now + (now - self.started) / done * (state.max_steps - state.global_step))
            return row.stop_requested

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not ("loss" in logs or "eval_loss" in logs):
            return
        parts = [f"Step {state.global_step}/{state.max_steps}"]
        data = {"step": state.global_step, "total_steps": state.max_steps}
        elapsed = time.time() - self.started
        if state.num_input_tokens_seen and elapsed > 0:  # throughput since this attempt started
            data["tokens_per_second"] = round((state.num_input_tokens_seen - self.first_tokens) / elapsed, 1)
        if "loss" in logs:
            parts.append(f"training loss={logs['loss']:.4f}")
            data["train_loss"] = logs["loss"]
        if "eval_loss" in logs:
            parts.append(f"validation loss={logs['eval_loss']:.4f}")
            data["valid_loss"] = logs["eval_loss"]
        try:
            self.lease.event(", ".join(parts[:1]) + ": " + ", ".join(parts[1:]), type_="metrics", data=data)
        except DatabaseUnavailable:
            pass  # the metrics are in the run's metrics.jsonl all the same


def train_attempt(workspace: Workspace, db: Database, lease: Lease) -> None:
    """Train the job once under ``lease`` and record how it ended. Raises db.LeaseLost (having
    recorded nothing) when the job was taken over, DatabaseUnavailable when the outcome could
    not be recorded."""
    job = retrying(lambda: get_job(db, lease.job_id))
    try:
        outcome = _train(workspace, db, lease, job)
    except DatabaseUnavailable:
        raise  # nothing can be recorded now; the worker records the attempt as crashed, to run again
    except Exception as e:  # the job fails with the error's code; the worker lives on
        lease.fail(without_server_paths(job_error(e), workspace, job))
        return
    if outcome is not None:
        _judge_retraining(workspace, db, retrying(lambda: get_job(db, job.id)), outcome)


def _train(workspace: Workspace, db: Database, lease: Lease, job: JobRow) -> Run | None:
    """The recipe run, then the outcome recorded; the run when the job succeeded."""
    files_dir = workspace.files_dir
    n_examples = len(validate_file(files_dir / job.training_file).records)
    config, hyper = job_config(job, files_dir, n_examples)
    run = _run_of(workspace, lease, job, hyper)
    result = recipe_for(config).run(config, workspace, run=run, console=Console(stderr=True, quiet=True), name=job.id,
                                   callbacks=[JobProgress(lease)])
    for event in read_events(result.run):  # e.g. tracking_failed: the job went on without tracking
        lease.event(event["message"], level="warn")
    stop = retrying(lambda: get_job(db, job.id)).stop_requested
    if stop == "cancel":
        lease.settle("cancelled", [("Job cancelled", "info")])
        return None
    if stop == "pause":
        lease.settle("paused", [("Job paused after writing a checkpoint", "info")], stop_requested=None)
        return None
    _succeed(lease, job, result, files_dir)
    return result.run


def _run_of(workspace: Workspace, lease: Lease, job: JobRow, hyper: dict) -> Run:
    """The job's run directory: recorded before training starts, so an attempt that dies mid-run
    leaves a job the next attempt resumes from its checkpoint rather than restarts."""
    if job.run_id:
        return Run(workspace.run_dir(job.run_id))
    run = new_run(workspace, job.id)
    method = {"type": job.method["type"], job.method["type"]: {"hyperparameters": hyper}}  # "auto" resolved
    lease.update(run_id=run.id, method=method)
    return run


def _succeed(lease: Lease, job: JobRow, result, files_dir: Path) -> None:
    tokens = result.summary.get("trained_loss_tokens") or result.summary.get("input_tokens_seen")
    results = results_file(files_dir, result.run.metrics_path)
    name = fine_tuned_name(job)
    try:
        lease.settle("succeeded", [(f"New fine-tuned model created: {name}", "info"),
                                   ("The job has successfully completed", "info")],
                     fine_tuned_model=name, trained_tokens=tokens, result_files=[results.id], extra_rows=[results])
    except BaseException:
        (files_dir / results.id).unlink(missing_ok=True)  # not recorded: no orphan file
        raise


def results_file(files_dir: Path, metrics_path: Path) -> FileRow:
    """OpenAI's results file (purpose ``fine-tune-results``): one CSV row per logged step,
    written to disk; the returned row is recorded with the job's outcome."""
    import csv
    import io
    import json

    rows: dict[int, dict] = {}
    for line in metrics_path.read_text().splitlines() if metrics_path.exists() else []:
        record = json.loads(line)
        row = rows.setdefault(record["step"], {"step": record["step"]})
        if "loss" in record:
            row["train_loss"] = record["loss"]
        if "eval_loss" in record:
            row["valid_loss"] = record["eval_loss"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"])
    writer.writeheader()
    writer.writerows(rows[step] for step in sorted(rows))
    content = buffer.getvalue().encode()
    file_id = "file-" + secrets.token_hex(12)
    (files_dir / file_id).write_bytes(content)
    return FileRow(id=file_id, filename="step_metrics.csv", purpose="fine-tune-results", bytes=len(content),
                   created_at=int(time.time()), status="processed", status_details=None,
                   sha256=hashlib.sha256(content).hexdigest())


def _judge_retraining(workspace: Workspace, db: Database, job: JobRow, run: Run) -> None:
    """A job queued by ``tunesmith monitor --retrain --submit``: evaluate it beside the model
    it would replace and promote it only if it is not worse. A failure here is reported in
    the job's events; the job itself stays succeeded (its model is there to inspect)."""
    def note(message: str, level: str = "info") -> None:
        retrying(lambda: add_event(db, job.id, message, level=level))

    try:
        verdict = judge_job(workspace, job, run, log=lambda message: None)
    except Exception as e:
        note(f"Retraining check failed: {e}", "error")
        return
    if verdict is None:
        return
    outcome = f"promoted behind alias {verdict['alias']}" if verdict["alias"] else \
        "promoted (no alias to move)" if verdict["promoted"] else f"not promoted: {verdict['current']} stays"
    note(f"Retraining check on {Path(verdict['test']).name}: {verdict['metric']} {verdict['candidate_score']:.4f} "
         f"(candidate) vs {verdict['current_score']:.4f} (current {verdict['current']}), {outcome}",
         "info" if verdict["promoted"] else "warn")


def job_error(exc: BaseException) -> dict:
    """The job's error object for an exception that ended training: its own code for divergence,
    a full disk and lack of memory (each needs a different fix), ``training_failed`` otherwise.

    >>> job_error(OSError(errno.ENOSPC, "No space left on device"))["code"]
    'disk_full'
    >>> job_error(MemoryError())["code"]
    'out_of_memory'
    """
    text = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
    if isinstance(exc, TrainingDiverged):
        return _error("training_diverged", str(exc))
    if _disk_full(exc):
        return _error("disk_full", f"The server's disk is full ({text}). The last complete checkpoint is kept and "
                                   "the partial one removed; free space on the server and create the job again.")
    if _out_of_memory(exc):
        return _error("out_of_memory", f"Training ran out of memory ({text}). Try a smaller batch_size, a shorter "
                                       "data.max_length or training.gradient_checkpointing.")
    return _error("training_failed", text)


def without_server_paths(error: dict, workspace: Workspace, job: JobRow) -> dict:
    """The error as its API client may read it: the job's files by their ids, the rest of the
    server's home as ``<home>`` (a job's error is any key holder's to see).

    >>> from pathlib import Path
    >>> job = JobRow(id="ftjob-1", training_file="file-abc", validation_file=None)
    >>> without_server_paths({"message": "/h/files/file-abc, line 3: bad JSON in /h/runs/x"}, Workspace(Path("/h")), job)
    {'message': 'file-abc, line 3: bad JSON in <home>/runs/x'}
    """
    message = error["message"]
    for file_id in filter(None, (job.training_file, job.validation_file)):
        message = message.replace(str(workspace.files_dir / file_id), file_id)
    return error | {"message": message.replace(str(workspace.home), "<home>")}


def _error(code: str, message: str) -> dict:
    return {"code": code, "message": message[:2000], "param": None}


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _disk_full(exc: BaseException) -> bool:
    # Training itself raises DiskFull (training/runner.fit tells a full disk from other write errors).
    return any(isinstance(e, DiskFull) or isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
               for e in _causes(exc))


def _out_of_memory(exc: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError and the CPU allocator's "can't allocate memory" are RuntimeErrors.
    return any(isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
               or "out of memory" in str(e).lower() or "can't allocate memory" in str(e) for e in _causes(exc))


def main(argv: list[str] | None = None) -> int:
    """The child process: the workspace and database come from the environment the worker set
    (TUNESMITH_HOME, TUNESMITH_DATABASE_URL)."""
    job_id, generation = argv if argv is not None else sys.argv[1:]
    workspace = Workspace.default()
    db = Database.for_workspace(workspace)
    try:
        train_attempt(workspace, db, Lease(db, job_id, int(generation)))
    except LeaseLost:
        return LEASE_LOST_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
