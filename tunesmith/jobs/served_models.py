"""The model names that fine-tuning jobs give the server: a succeeded job's ``fine_tuned_model``
and each sound checkpoint's ``<name>:ckpt-step-<n>``, read from the job database.

``JobModels`` is the server's ``JobCatalog`` (``tunesmith/serving/names.py``): the jobs layer
implements it so that serving never reads the job tables itself. Jobs that retrained a
classifier are not chat models: they are reached through ``run_of`` (``/v1/classifications``).
"""
from __future__ import annotations

from sqlalchemy import select

from tunesmith.jobs.db import Database, JobRow
from tunesmith.jobs.fine_tuning import checkpoint_dirs, fine_tuned_name
from tunesmith.runs import Run
from tunesmith.serving.names import Target, trained
from tunesmith.training.recipes import recipe_named
from tunesmith.workspace import Workspace


class JobModels:
    def __init__(self, workspace: Workspace, db: Database):
        self.workspace, self.db = workspace, db

    def targets(self) -> list[Target]:
        """Each job's fine-tuned language model (once it succeeded) and its checkpoints."""
        found = []
        for job in self._jobs_with_runs():
            if not recipe_named((job.settings or {}).get("recipe")).generates:  # a classifier: /v1/classifications
                continue
            final = Run(self.workspace.run_dir(job.run_id)).final_dir
            if job.fine_tuned_model and job.status == "succeeded" and final.exists():
                found.append(trained(job.fine_tuned_model, job.model, final, job.finished_at or 0))
            for step, path in checkpoint_dirs(self.workspace, job):
                found.append(Target(f"{fine_tuned_name(job)}:ckpt-step-{step}", job.model, path,
                                    created=int(path.stat().st_mtime)))
        return found

    def run_ids(self) -> set[str]:
        with self.db.session() as session:
            return set(session.scalars(select(JobRow.run_id).where(JobRow.run_id.is_not(None))))

    def run_of(self, name: str) -> str | None:
        if not name.startswith("ft:"):
            return None
        with self.db.session() as session:
            job = session.scalars(select(JobRow).where(JobRow.fine_tuned_model == name,
                                                       JobRow.status == "succeeded")).first()
        return job.run_id if job is not None else None

    def _jobs_with_runs(self) -> list[JobRow]:
        with self.db.session() as session:
            return list(session.scalars(select(JobRow).where(JobRow.run_id.is_not(None))))
