"""Every child process tunesmith starts works in its parent's home: the home goes to the child in
``TUNESMITH_HOME``, whatever the parent's own environment says. A caller that passes its own
workspace (``serve(workspace=Workspace(path))``) must get workers, trainers, evaluations,
scheduled checks and search workers in that home, not in ``~/.cache/tunesmith``.

Each test starts the real code path with ``TUNESMITH_HOME`` naming another home, records the
environment the child would get (``subprocess.Popen``/``run`` replaced by a recorder that starts
a do-nothing child in its place, so the code that waits on its children still runs), and checks
the home the child was given.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

from tunesmith.workspace import Workspace

REAL_POPEN = subprocess.Popen


class Spawned:
    """Replaces ``subprocess.Popen``: records each command and environment; the child started
    instead only runs ``pass``."""

    def __init__(self):
        self.calls: list[tuple[list[str], dict | None]] = []
        self.started = threading.Event()

    def __call__(self, command, *args, env=None, **kwargs):
        self.calls.append((list(command), env))
        self.started.set()
        kwargs.pop("preexec_fn", None)
        return REAL_POPEN([sys.executable, "-c", "pass"], **kwargs)

    def homes(self) -> list[str | None]:
        return [(env or {}).get("TUNESMITH_HOME") for _, env in self.calls]


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """(this caller's workspace, the recorder): TUNESMITH_HOME names another home."""
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "elsewhere"))
    spawned = Spawned()
    monkeypatch.setattr(subprocess, "Popen", spawned)
    return Workspace(tmp_path / "home"), spawned


def test_serve_starts_its_workers_in_the_callers_workspace(homes, monkeypatch):
    pytest.importorskip("uvicorn")
    from tunesmith.web import serve as serving

    workspace, spawned = homes
    monkeypatch.setattr(serving, "create_app", lambda ws, settings: object())
    monkeypatch.setattr(serving.uvicorn, "run", lambda app, **kw: spawned.started.wait(10))  # until a worker is up
    handler = signal.getsignal(signal.SIGTERM)  # serve() installs its own in the main thread
    try:
        serving.serve(workspace=workspace, workers=1, log=lambda message: None)
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert spawned.calls and spawned.calls[0][0][-1] == "worker"
    assert set(spawned.homes()) == {str(workspace.home)}


def test_a_worker_starts_its_trainer_in_its_workspace(homes):
    from tunesmith.jobs.worker import Worker

    workspace, spawned = homes
    worker = Worker(workspace, types.SimpleNamespace(url="sqlite:///jobs.db"), name="w", log=lambda m: None)
    job = types.SimpleNamespace(id="ftjob-1", attempts=1, lease_generation=1)
    worker._start_trainer(job).wait()
    assert "tunesmith.jobs.trainer" in spawned.calls[0][0]
    assert spawned.calls[0][1]["TUNESMITH_HOME"] == str(workspace.home)
    assert spawned.calls[0][1]["TUNESMITH_DATABASE_URL"] == "sqlite:///jobs.db"


def test_methods_compare_trains_each_method_in_its_workspace(homes, tmp_path):
    from tunesmith.tuning.methods import compare_methods

    workspace, spawned = homes
    config = tmp_path / "recipe.yaml"
    config.write_text("data:\n  train: train.jsonl\n")
    table = compare_methods(config, ["lora", "full"], [], workspace, evaluate=False, out=tmp_path / "out",
                            log=lambda m: None)
    assert [row["method"] for row in table["runs"]] == ["lora", "full"]  # each failed: the child trained nothing
    assert [command[3] for command, _ in spawned.calls] == ["train", "train"]
    assert spawned.homes() == [str(workspace.home)] * 2


def test_search_workers_join_in_the_searchs_home(homes):
    from tunesmith.tuning.study import spawn_workers

    workspace, spawned = homes
    for proc in spawn_workers("s", "sqlite:///studies.db", 2, None, workspace.home):
        proc.wait()
    assert spawned.homes() == [str(workspace.home)] * 2


def test_an_evaluation_started_from_the_web_runs_in_the_servers_home(homes):
    from tunesmith.jobs import evaluations
    from tunesmith.runs import new_run

    workspace, spawned = homes
    run = new_run(workspace, "done")
    run.update_info(status="succeeded")
    try:
        evaluations.start(workspace, files=None, run_id=run.id, body={})
    finally:
        child = evaluations._children.pop(run.id, None)
        if child is not None:
            child.wait()
    assert spawned.calls[0][0][3:5] == ["eval", run.id]
    assert spawned.homes() == [str(workspace.home)]


def test_a_scheduled_check_runs_in_the_servers_home(homes, monkeypatch):
    from tunesmith.monitoring import schedule as schedules

    workspace, _ = homes
    seen = []

    def run(command, **kwargs):
        seen.append(kwargs["env"]["TUNESMITH_HOME"])
        return subprocess.CompletedProcess(command, 0, stdout="{}", stderr="")

    monkeypatch.setattr(subprocess, "run", run)
    workspace.monitor_schedule_path.parent.mkdir(parents=True)  # made by the check it stands in for
    schedules.check(schedules.Schedule(models=["m"], every_seconds=3600), "m", workspace)
    assert seen == [str(workspace.home)]
    assert schedules.read_state(workspace)["m"]["exit_code"] == 0  # recorded in that home too


def test_distributed_ranks_train_in_the_launchers_home(homes, monkeypatch, tmp_path):
    pytest.importorskip("torch")
    import os

    import torch.distributed.run as torchrun

    from tunesmith.training.launch import launch

    workspace, _ = homes
    seen = []
    monkeypatch.setattr(torchrun, "run", lambda args: seen.append(os.environ["TUNESMITH_HOME"]))
    launch(Path(tmp_path / "run"), True, nproc=2, home=workspace.home)
    assert seen == [str(workspace.home)]
    assert os.environ["TUNESMITH_HOME"] == str(tmp_path / "elsewhere")  # set for the launch only
