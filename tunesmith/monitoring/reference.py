"""What a served model was trained on: the model name as the server knows it (a run id, a
fine-tuning job's ``ft:`` name or one of its checkpoints) → its run → the run's training data,
read as the inputs a user would send (the last user turn, a prompt, a text to classify) and, for
classifiers, the labels."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from tunesmith.config import load_config
from tunesmith.data.formats import SFT_FORMATS, Format, as_preference, last_user_text, to_messages
from tunesmith.data.validate import validate_file
from tunesmith.errors import ConfigError, DataError, RunNotFound
from tunesmith.jobs.db import Database, JobRow
from tunesmith.jobs.fine_tuning import fine_tuned_name
from tunesmith.runs import Run, find_run
from tunesmith.serving.aliases import read_aliases
from tunesmith.workspace import Workspace


@dataclass
class Reference:
    source: str                       # the file the inputs come from
    inputs: list[str]
    labels: list[str] = field(default_factory=list)
    run: Run | None = None


def run_of_model(model: str, workspace: Workspace, db: Database) -> Run | None:
    """The run behind a served model name (or serving alias), or None for a base model."""
    model = read_aliases(workspace).get(model, model)
    if model.startswith("ft:"):
        name = model.split(":ckpt-step-")[0]

        with db.session() as session:
            for job in session.scalars(select(JobRow).where(JobRow.run_id.is_not(None))):
                if name in (job.fine_tuned_model, fine_tuned_name(job)):
                    return Run(workspace.run_dir(job.run_id))
        return None
    try:
        return find_run(model, workspace)
    except RunNotFound:
        return None


def load_reference(model: str, workspace: Workspace, db: Database, path: str | Path | None = None) -> Reference:
    """The training inputs of ``model`` (or of ``path``, a dataset file, when given)."""
    run = run_of_model(model, workspace, db)
    if path is None:
        if run is None:
            raise ConfigError(f"{model} is not a fine-tuned model of this home, so its training data is unknown: "
                              "give --reference FILE (data in any supported format) to compare live inputs with")
        path = load_config(run.config_path).data.train
    report = validate_file(path, min_examples=1)
    if not report.ok:
        raise DataError(report.summary(), report)
    reference = Reference(str(path), [], run=run)
    for record in report.records:
        value = record.value
        if report.format == Format.CLASSIFICATION:
            reference.inputs.append(str(value["text"]))
            reference.labels.append(str(value["label"]).strip())
        elif report.format == Format.PREFERENCE:
            reference.inputs.append(last_user_text(as_preference(value)["prompt"]))
        elif report.format in SFT_FORMATS:
            reference.inputs.append(last_user_text(to_messages(value, report.format)))
    return reference
