"""``tunesmith monitor MODEL --retrain``: the next model, and whether it may replace this one.

1. The new data: accepted feedback on this model (corrections, answers rated good, corrected
   labels) and fresh labelled files (e.g. the output of ``label suggest``, labelled), without
   model proposals nobody confirmed (``_prelabel.status: proposed``), duplicates, or anything
   whose input is in the test data.
2. Mixed with the original training data, so the model learns the new cases without forgetting
   the old: all of it by default (``replay=1``: the next model is trained from the base model,
   like the current one, so leaving original data out costs accuracy), or a ``replay`` share
   (< 1: the share of the new training set drawn from it) when the original data is too large
   to train on again.
3. Trained with the current run's recipe (same base model, method, settings), then both models
   are evaluated on the same held-out data; the new one is promoted only if its headline figure
   is at least the current one's minus ``tolerance``. Promotion points a serving alias
   (``<home>/aliases.json``) at the new run, so clients that call the alias switch over.

With ``submit`` the training is not done here: the dataset is filed and a fine-tuning job is
queued (the same queue as ``POST /v1/fine_tuning/jobs``), so it runs on the server's workers,
shows in the UI, can be paused and resumes after a crash; the worker that finishes it runs step
3 and writes the verdict into the job's events and ``<home>/retrain/<folder>/retrain.json``.
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import select

from tunesmith.config import load_config
from tunesmith.data.dedup import fold
from tunesmith.data.formats import SFT_FORMATS, Format, to_messages
from tunesmith.data.io import read_rows, write_jsonl
from tunesmith.data.validate import validate_file
from tunesmith.errors import ConfigError, DataError
from tunesmith.files import write_json_atomic
from tunesmith.jobs.db import Database, FeedbackRow, JobRow
from tunesmith.jobs.feedback import record as feedback_record, target_answer
from tunesmith.jobs.files import FileStore
from tunesmith.jobs.fine_tuning import TERMINAL, create_job
from tunesmith.jobs.promotion import RETRAIN_KEY, judge
from tunesmith.monitoring.reference import run_of_model
from tunesmith.runs import Run
from tunesmith.training.launch import train
from tunesmith.training.recipes import recipe_for
from tunesmith.workspace import Workspace


def retrain(model: str, workspace: Workspace, fresh: list[str | Path] | None = None, replay: float = 1.0,
            test: str | Path | None = None, tolerance: float = 0.0, alias: str | None = None, seed: int = 0,
            overrides: list[str] | None = None, submit: bool = False,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the new dataset, then either train here and judge at once, or (``submit``) file the
    dataset and queue a fine-tuning job for the server's workers; the worker that finishes the
    job runs the same judgement (:func:`judge_job`) and records it in the job's events."""
    if not 0 <= replay <= 1:
        raise ConfigError(f"replay must be in [0, 1] (1: all the original training data), not {replay}")
    db = Database.for_workspace(workspace)
    current = run_of_model(model, workspace, db)
    if current is None:
        raise ConfigError(f"{model} is not a fine-tuned model of this home: nothing to retrain")
    config = load_config(current.config_path, overrides or [])  # a bad --train-set fails before any work
    test = test or config.data.test
    if not test:
        raise ConfigError(f"give --test FILE: {current.id}'s config has no data.test to compare the models on")
    out = workspace.retrain_dir / f"{current.id}-{time.strftime('%Y%m%d-%H%M%S')}"
    if submit:
        _refuse_a_second_job(db, current.id)
    built = build_dataset(model, current, db, fresh or [], replay, test, seed, out / "train.jsonl", log)
    plan = {"model": model, "current": current.id, "data": built, "test": str(Path(test).resolve()),
            "tolerance": tolerance, "alias": alias}
    if submit:
        return _submit(plan, config, workspace, db, out, seed, log)
    log(f"retraining {current.id}'s recipe on {built['records']} records "
        f"({built['new']} new, {built['replayed']} replayed)")
    new_config = load_config(current.config_path, [f"data.train={out / 'train.jsonl'}",
                                                   f"run_name=retrain-{current.id[-24:]}", *(overrides or [])])
    new_run = train(new_config, workspace, name=new_config.run_name).run
    return judge(plan, new_run, workspace, out, log)


def _submit(plan: dict[str, Any], config, workspace: Workspace, db: Database, out: Path, seed: int,
            log: Callable[[str], None]) -> dict[str, Any]:
    store = FileStore(db, workspace.files_dir, max_bytes=1 << 40)
    filed = store.save_bytes(f"retrain-{plan['current'][-24:]}.jsonl", (out / "train.jsonl").read_bytes())
    if filed["status"] != "processed":
        raise DataError(f"the retraining data did not validate: {filed.get('status_details')}")
    method = recipe_for(config).job_method
    job = create_job(db, {"model": config.model, "training_file": filed["id"], "suffix": "retrain", "seed": seed,
                          "method": {"type": method}, "metadata": {RETRAIN_KEY: out.name, "retrain_of": plan["current"]}},
                     recipe_settings=_recipe_settings(config))
    if job["status"] != "queued":
        raise DataError(f"the retraining job {job['id']} was not queued: {job.get('error')}")
    log(f"submitted {job['id']}: {plan['current']}'s recipe on {plan['data']['records']} records; a worker trains it "
        "and promotes it only if it evaluates at least as well (`tunesmith serve` or `tunesmith worker`)")
    result = plan | {"status": "submitted", "job": job["id"], "training_file": filed["id"]}
    write_json_atomic(out / "retrain.json", result)
    return result | {"report": str(out / "retrain.json")}


def pending_retraining(db: Database, run_id: str) -> str | None:
    """The id of a retraining job of ``run_id`` that has not finished, if any."""
    with db.session() as session:
        for job in session.scalars(select(JobRow).where(JobRow.status.not_in(TERMINAL))):
            if (job.job_metadata or {}).get("retrain_of") == run_id:
                return job.id
    return None


def _refuse_a_second_job(db: Database, run_id: str) -> None:
    pending = pending_retraining(db, run_id)
    if pending:
        raise ConfigError(f"{pending} is already retraining {run_id}: wait for it (or cancel it) before queueing another")




def _recipe_settings(config) -> dict[str, Any]:
    """The current run's whole recipe, less what the job itself supplies (base model, files, name).
    Unset (null) values are left out so the job's own defaults (e.g. a checkpoint per epoch) hold."""
    def present(value):
        if isinstance(value, dict):
            return {k: present(v) for k, v in value.items() if v is not None}
        return value

    settings = present(config.model_dump(mode="json"))
    for key in ("model", "run_name"):
        settings.pop(key, None)
    for key in ("train", "validation", "test"):
        settings.get("data", {}).pop(key, None)
    return settings


def build_dataset(model: str, current: Run, db: Database, fresh: list[str | Path], replay: float, test: str | Path,
                  seed: int, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the new training set to ``out``; returns where each part came from."""
    config = load_config(current.config_path)
    original = validate_file(config.data.train, min_examples=1)
    fmt = original.format
    classify = fmt == Format.CLASSIFICATION
    new = _feedback_records(db, model, classify)
    from_feedback = len(new)
    unconfirmed = 0
    for path in fresh:
        for row in read_rows(Path(path)):
            if row.error or not isinstance(row.value, dict):
                raise DataError(f"{path}:{row.line}: {row.error or 'not a JSON object'}")
            if (row.value.get("_prelabel") or {}).get("status") == "proposed":
                unconfirmed += 1  # a model's guess nobody confirmed is not a label
                continue
            new.append({k: v for k, v in row.value.items() if not k.startswith("_")})
    held_out = {_input_key(r.value, fmt) for r in validate_file(test, min_examples=1).records}
    seen = {_input_key(r.value, fmt) for r in original.records}
    kept, dropped = [], {"duplicate": 0, "in_test_data": 0}
    for record in new:
        key = _input_key(record, fmt)
        if key in held_out:
            dropped["in_test_data"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            kept.append(record)
    if not kept:
        raise DataError(f"no new training data for {model}: accept feedback in the review queue or give --fresh "
                        f"FILE (labelled); dropped {dropped}, {unconfirmed} unconfirmed proposal(s)")
    # All of it, or enough to make the share; at least enough records for the recipe to train on.
    wanted = len(original.records) if replay >= 1 else \
        max(round(len(kept) * replay / (1 - replay)), config.data.min_examples - len(kept))
    rng = random.Random(seed)
    replayed = rng.sample([r.value for r in original.records], min(wanted, len(original.records)))
    records = kept + replayed
    rng.shuffle(records)
    write_jsonl(out, records)
    report = validate_file(out, min_examples=1)
    if not report.ok:
        raise DataError(report.summary(), report)
    log(f"new data: {from_feedback} from feedback, {len(new) - from_feedback} from fresh files; kept {len(kept)} "
        f"(dropped {dropped['duplicate']} duplicates, {dropped['in_test_data']} in the test data, "
        f"{unconfirmed} unconfirmed proposals); replayed {len(replayed)} original records")
    return {"path": str(out), "records": len(records), "new": len(kept), "from_feedback": from_feedback,
            "replayed": len(replayed), "dropped": dropped, "unconfirmed": unconfirmed, "replay": replay}


def _feedback_records(db: Database, model: str, classify: bool) -> list[dict[str, Any]]:
    with db.session() as session:
        rows = list(session.scalars(select(FeedbackRow).where(FeedbackRow.model == model,
                                                              FeedbackRow.status.in_(("accepted", "exported")))))
    return [feedback_record(r) for r in rows if target_answer(r) is not None and (r.label is not None) == classify]


def _input_key(record: dict[str, Any], fmt: Format) -> str:
    """What a user would send: the text to classify, or the conversation up to its last answer."""
    if fmt == Format.CLASSIFICATION or "text" in record:
        return fold(str(record.get("text", "")))
    messages = to_messages(record, fmt if fmt in SFT_FORMATS else Format.CHAT)
    while messages and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    return fold("\n".join(str(m.get("content", "")) for m in messages if m.get("role") != "system"))
