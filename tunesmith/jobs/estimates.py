"""The pre-flight estimate of a fine-tuning job before it is created (``POST
/v1/tunesmith/estimates``, the web UI's Estimate button): the same body as ``POST
/v1/fine_tuning/jobs``, checked the same way, turned into the recipe config a worker would train
(jobs/fine_tuning.job_config), and probed by training/estimate.py — peak RAM (GPU memory on
CUDA), tokens and steps per epoch, time per epoch, checkpoint disk, and whether it fits in the
memory free now. Nothing is stored.

A probe loads the model and trains a few steps, so one runs at a time: a second request while
one runs gets a 429 rather than doubling the memory the first is measuring."""
from __future__ import annotations

import threading
from typing import Any

from tunesmith.data.validate import validate_file
from tunesmith.errors import APIError, TunesmithError
from tunesmith.jobs.fine_tuning import job_config, new_job
from tunesmith.training.estimate import estimate
from tunesmith.workspace import Workspace

PROBE_TIMEOUT = 900.0  # seconds: a probe is a few steps; past this the machine is far too slow anyway
_PROBING = threading.Lock()


def estimate_job(workspace: Workspace, body: dict[str, Any]) -> dict[str, Any]:
    """The estimate of the job ``body`` describes (files already checked by the route)."""
    job = new_job(body)
    n_examples = len(validate_file(workspace.files_dir / job.training_file).records)
    config, hyper = job_config(job, workspace.files_dir, n_examples)
    if not _PROBING.acquire(blocking=False):
        raise APIError(429, "An estimate is already running on this server; retry when it has finished.",
                       "estimate_in_progress", type_="rate_limit_error", headers={"Retry-After": "30"})
    try:
        found = estimate(config, workspace, timeout=PROBE_TIMEOUT)
    except TunesmithError as e:
        raise APIError(400, f"The estimate could not be made: {e}", "estimate_failed", None) from None
    finally:
        _PROBING.release()
    return {"object": "tunesmith.estimate", "model": job.model, "training_file": job.training_file,
            "hyperparameters": hyper, **found.to_dict()}
