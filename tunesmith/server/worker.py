"""Workers run fine-tuning jobs, in their own processes (never in the web process).

A worker claims the oldest ``queued`` job with a conditional UPDATE (two workers cannot claim one
job), trains it with the job's recipe (sft, or dpo for method type dpo) and records events and a heartbeat as it goes. A job whose
worker died (kill -9, power loss) is noticed by its stale heartbeat, put back in the queue with an
event, and the next worker resumes it from its last complete checkpoint (``tunesmith.resume``).
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from rich.console import Console
from transformers import TrainerCallback

from tunesmith.runs import Run, new_run
from tunesmith.server.db import Database, JobRow
from tunesmith.server.jobs import add_event, fine_tuned_name, get_job, job_config
from tunesmith.workspace import Workspace

HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 60.0


class JobProgress(TrainerCallback):
    """Events (metrics per log), heartbeat, ETA, and cancellation between steps."""

    def __init__(self, db: Database, job_id: str):
        self.db, self.job_id = db, job_id
        self.started, self.last_beat, self.first_tokens = time.time(), 0.0, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.first_step = time.time(), state.global_step
        self.first_tokens = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        now = time.time()
        with self.db.session() as session:
            row = session.get(JobRow, self.job_id)
            stop = row.stop_requested
            if now - self.last_beat >= HEARTBEAT_SECONDS:
                self.last_beat = now
                done = max(state.global_step - self.first_step, 1)
                row.heartbeat_at = now
                row.estimated_finish = int(now + (now - self.started) / done * (state.max_steps - state.global_step))
        if stop:
            control.should_training_stop = True
            control.should_save = stop == "pause"  # a paused job continues from this step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not ("loss" in logs or "eval_loss" in logs):
            return
        parts = [f"Step {state.global_step}/{state.max_steps}"]
        data = {"step": state.global_step, "total_steps": state.max_steps}
        elapsed = time.time() - self.started
        if state.num_input_tokens_seen and elapsed > 0:  # throughput since this worker started (or resumed) the job
            data["tokens_per_second"] = round((state.num_input_tokens_seen - self.first_tokens) / elapsed, 1)
        if "loss" in logs:
            parts.append(f"training loss={logs['loss']:.4f}")
            data["train_loss"] = logs["loss"]
        if "eval_loss" in logs:
            parts.append(f"validation loss={logs['eval_loss']:.4f}")
            data["valid_loss"] = logs["eval_loss"]
        add_event(self.db, self.job_id, ", ".join(parts[:1]) + ": " + ", ".join(parts[1:]), type_="metrics", data=data)


class Worker:
    def __init__(self, workspace: Workspace, db: Database, name: str | None = None):
        self.workspace, self.db = workspace, db
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.files_dir = workspace.home / "files"

    def run_forever(self, poll_seconds: float = 1.0, stop_after: int | None = None) -> None:
        done = 0
        while stop_after is None or done < stop_after:
            self.requeue_stale()
            if self.run_one():
                done += 1
            else:
                time.sleep(poll_seconds)

    def requeue_stale(self) -> list[str]:
        """Jobs ``running`` whose worker is gone: a process of this host that no longer exists, or
        no heartbeat for STALE_AFTER_SECONDS (a worker on another host, or a hung one)."""
        from sqlalchemy import select

        limit = time.time() - STALE_AFTER_SECONDS
        requeued = []
        with self.db.session() as session:
            for row in session.scalars(select(JobRow).where(JobRow.status == "running")):
                if (row.heartbeat_at or 0) < limit or _dead_here(row.worker):
                    row.status, row.worker = "queued", None
                    requeued.append(row.id)
        for job_id in requeued:
            add_event(self.db, job_id, "The worker running this job stopped responding; the job is queued again "
                                       "and will resume from its last complete checkpoint", level="warn")
        return requeued

    def run_one(self) -> bool:
        job = self.db.claim("queued", "running", self.name)
        if job is None:
            return False
        add_event(self.db, job.id, "Fine-tuning job started" if not job.run_id else
                  f"Fine-tuning job resumed by {self.name}")
        try:
            self._train(job)
        except Exception as e:  # the job fails; the worker lives on to take the next one
            self._finish(job.id, "failed", error={"code": "training_failed", "message": str(e)[:2000], "param": None})
            add_event(self.db, job.id, f"Job failed: {e}", level="error")
        return True

    def _train(self, job: JobRow) -> None:
        from tunesmith.api import recipe_runner
        from tunesmith.data.validate import validate_file
        from tunesmith.tracking.tracker import read_events

        n_examples = len(validate_file(self.files_dir / job.training_file).records)
        config, hyper = job_config(job, self.files_dir, n_examples)
        progress = JobProgress(self.db, job.id)
        console = Console(stderr=True, quiet=True)
        run = self._run_of(job, hyper)
        result = recipe_runner(config)(config, self.workspace, run=run, console=console, name=job.id,
                                       callbacks=[progress])
        for event in read_events(result.run):  # e.g. tracking_failed: the job went on without tracking
            add_event(self.db, job.id, event["message"], level="warn")
        stop = get_job(self.db, job.id).stop_requested
        if stop == "cancel":
            self._finish(job.id, "cancelled")
            add_event(self.db, job.id, "Job cancelled")
            return
        if stop == "pause":
            with self.db.session() as session:
                row = session.get(JobRow, job.id)
                row.status, row.stop_requested, row.worker, row.estimated_finish = "paused", None, None, None
            add_event(self.db, job.id, "Job paused after writing a checkpoint")
            return
        tokens = result.summary.get("trained_loss_tokens") or result.summary.get("input_tokens_seen")
        results = write_results_file(self.db, self.files_dir, result.run.metrics_path)
        self._finish(job.id, "succeeded", fine_tuned_model=fine_tuned_name(job), trained_tokens=tokens,
                     result_files=[results])
        add_event(self.db, job.id, f"New fine-tuned model created: {fine_tuned_name(job)}")
        add_event(self.db, job.id, "The job has successfully completed")
        self._judge_retraining(job, result.run)

    def _judge_retraining(self, job: JobRow, run: Run) -> None:
        """A job queued by ``tunesmith monitor --retrain --submit``: evaluate it beside the model
        it would replace and promote it only if it is not worse. A failure here is reported in
        the job's events; the job itself stays succeeded (its model is there to inspect)."""
        from tunesmith.monitoring.retrain import judge_job

        try:
            verdict = judge_job(self.workspace, self.db, job, run, log=lambda message: None)
        except Exception as e:
            add_event(self.db, job.id, f"Retraining check failed: {e}", level="error")
            return
        if verdict is None:
            return
        outcome = f"promoted behind alias {verdict['alias']}" if verdict["alias"] else \
            "promoted (no alias to move)" if verdict["promoted"] else f"not promoted: {verdict['current']} stays"
        add_event(self.db, job.id, f"Retraining check on {Path(verdict['test']).name}: {verdict['metric']} "
                                   f"{verdict['candidate_score']:.4f} (candidate) vs {verdict['current_score']:.4f} "
                                   f"(current {verdict['current']}), {outcome}", level="info" if verdict["promoted"] else "warn")

    def _run_of(self, job: JobRow, hyper: dict) -> Run:
        """The job's run directory: recorded before training starts, so a worker that dies
        mid-run leaves a job the next worker resumes from its checkpoint rather than restarts."""
        if job.run_id:
            return Run(self.workspace.run_dir(job.run_id))
        run = new_run(self.workspace, job.id)
        with self.db.session() as session:
            row = session.get(JobRow, job.id)
            row.run_id = run.id
            row.method = {"type": row.method["type"], row.method["type"]: {"hyperparameters": hyper}}  # "auto" resolved
        return run

    def _finish(self, job_id: str, status: str, **fields) -> None:
        with self.db.session() as session:
            row = session.get(JobRow, job_id)
            row.status, row.finished_at, row.estimated_finish = status, int(time.time()), None
            for key, value in fields.items():
                setattr(row, key, value)


def write_results_file(db: Database, files_dir, metrics_path) -> str:
    """OpenAI's results file (purpose ``fine-tune-results``): one CSV row per logged step."""
    import csv
    import hashlib
    import io
    import json
    import secrets

    from tunesmith.server.db import FileRow

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
    with db.session() as session:
        session.add(FileRow(id=file_id, filename="step_metrics.csv", purpose="fine-tune-results", bytes=len(content),
                            created_at=int(time.time()), status="processed", status_details=None,
                            sha256=hashlib.sha256(content).hexdigest()))
    return file_id


def _dead_here(worker: str | None) -> bool:
    """Whether ``worker`` ("host:pid") names a process of this host that has exited."""
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    import psutil

    return not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
