"""Promotion of a retrained model: evaluated beside the model it would replace on the same test
data, promoted (its serving alias moved) only if it is not worse by more than the tolerance.

``tunesmith monitor --retrain`` judges at once; a retraining queued as a job (``--submit``)
is judged by the worker that finishes it (:func:`judge_job`), with the plan the retrain
folder recorded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from tunesmith.eval.evaluate import EvalOptions, evaluate, headline
from tunesmith.files import write_json_atomic
from tunesmith.runs import Run
from tunesmith.serving.aliases import set_alias
from tunesmith.workspace import Workspace

RETRAIN_KEY = "tunesmith_retrain"  # job metadata: the retrain folder whose plan the finished job is judged by


def judge(plan: dict[str, Any], candidate: Run, workspace: Workspace, out: Path,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate the current and the candidate model on the same test data; promote the candidate
    (point ``alias`` at it) only if its headline figure is not worse by more than ``tolerance``."""
    scores = {}
    for role, run_id in (("current", plan["current"]), ("candidate", candidate.id)):
        log(f"evaluating the {role} model {run_id} on {Path(plan['test']).name}")
        report = evaluate(run_id, workspace, plan["test"], EvalOptions(samples=0, baselines=False), log=log)
        scores[role] = headline(report)
    metric, higher = scores["current"][0], scores["current"][2]
    gain = (scores["candidate"][1] - scores["current"][1]) * (1 if higher else -1)
    promoted = gain >= -plan["tolerance"]
    result = plan | {"status": "judged", "candidate": candidate.id, "metric": metric,
                     "current_score": scores["current"][1], "candidate_score": scores["candidate"][1],
                     "gain": gain, "promoted": promoted, "alias": None}
    if promoted and plan.get("alias"):
        set_alias(workspace, plan["alias"], candidate.id)
        result["alias"] = plan["alias"]
    write_json_atomic(out / "retrain.json", result)
    result["report"] = str(out / "retrain.json")
    return result


def judge_job(workspace: Workspace, job, candidate: Run, log: Callable[[str], None]) -> dict | None:
    """Called by the worker when a job succeeds: a retraining job is judged against the model it
    would replace. Returns the judgement, or None for an ordinary job."""
    folder = (job.job_metadata or {}).get(RETRAIN_KEY)
    if not folder:
        return None
    out = workspace.retrain_dir / Path(folder).name
    plan = json.loads((out / "retrain.json").read_text(encoding="utf-8"))
    return judge(plan | {"job": job.id}, candidate, workspace, out, log)
