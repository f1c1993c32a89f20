"""Faults: a worker killed with SIGKILL mid-training, a job cancelled while it runs, a full disk
and lack of memory during training, two workers and a save longer than the lease, and
`tunesmith serve` supervising (and stopping) its workers and their trainers."""
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from tests.conftest import chat_records, write_jsonl
from tests.server.test_openai_sdk import free_port, install_model, wait_for

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    import threading

    import uvicorn

    from tunesmith import api
    from tunesmith.web.app import create_app
    from tunesmith.workspace import Workspace

    workspace = Workspace(tmp_path / "home")
    install_model(workspace.home, tiny_model_dir)
    secret, _ = api.create_api_key("faults", workspace=workspace)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(workspace), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=secret, max_retries=0)
    workers = []

    def start_worker():
        env = dict(os.environ, TUNESMITH_HOME=str(workspace.home))
        workers.append(subprocess.Popen([sys.executable, "-m", "tunesmith", "worker", "--poll", "0.2"], env=env))
        return workers[-1]

    yield client, workspace, start_worker
    for proc in workers:
        proc.kill()
    server.should_exit = True
    thread.join(timeout=10)


def _long_job(client, tiny_model_dir, tmp_path, epochs=30):
    data = write_jsonl(tmp_path / "train.jsonl", chat_records(24))
    uploaded = client.files.create(file=open(data, "rb"), purpose="fine-tune")
    return client.fine_tuning.jobs.create(model="tiny-chat", training_file=uploaded.id,
                                          hyperparameters={"n_epochs": epochs, "batch_size": 4})


def wait_for_checkpoint(client, job_id, process, timeout=120):
    """Until the job has a complete checkpoint (the process training it must stay alive)."""
    deadline = time.time() + timeout
    while not list(client.fine_tuning.jobs.checkpoints.list(job_id)):
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.1)


def test_worker_killed_mid_training_is_resumed_from_its_checkpoint(server, tiny_model_dir, tmp_path):
    client, workspace, start_worker = server
    job = _long_job(client, tiny_model_dir, tmp_path)
    first = start_worker()
    wait_for_checkpoint(client, job.id, first)
    trainers = psutil.Process(first.pid).children()
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # what the database last heard
    assert trainers and psutil.wait_procs(trainers, timeout=10)[1] == []  # its trainer died with it

    start_worker()  # e.g. the server restarted: the new worker reconciles, then resumes
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert any("stopped responding" in m for m in messages)
    assert any(m.startswith("Fine-tuning job resumed") for m in messages)
    run_id = [d for d in (workspace.home / "runs").iterdir()][0].name
    info = json.loads((workspace.home / "runs" / run_id / "run.json").read_text())
    assert info["resumed_from_step"] > 0 and info["status"] == "succeeded"


def test_cancel_a_running_job(server, tiny_model_dir, tmp_path):
    client, _, start_worker = server
    job = _long_job(client, tiny_model_dir, tmp_path, epochs=50)
    start_worker()
    wait_for(client, job.id, statuses=("running",), timeout=60)
    client.fine_tuning.jobs.cancel(job.id)
    assert wait_for(client, job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)


def test_pause_writes_a_checkpoint_and_resume_continues_from_it(server, tiny_model_dir, tmp_path):
    client, workspace, start_worker = server
    job = _long_job(client, tiny_model_dir, tmp_path, epochs=40)
    start_worker()
    wait_for(client, job.id, statuses=("running",), timeout=60)
    time.sleep(1.0)
    client.fine_tuning.jobs.pause(job.id)
    paused = wait_for(client, job.id, statuses=("paused", "succeeded", "failed"))
    assert paused.status == "paused"
    steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
    assert steps
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    run_dir = next((workspace.home / "runs").iterdir())
    assert json.loads((run_dir / "run.json").read_text())["resumed_from_step"] == max(steps)


def test_server_killed_and_restarted_reconciles_and_finishes_the_job(tmp_path, tiny_model_dir):
    """`tunesmith serve` (web process + its worker) killed with SIGKILL mid-training, then started
    again: the job that was `running` is reconciled, resumed from its checkpoint and succeeds."""
    from tunesmith import api
    from tunesmith.workspace import Workspace

    home = tmp_path / "home"
    install_model(home, tiny_model_dir)
    secret, _ = api.create_api_key("restart", workspace=Workspace(home))
    port = free_port()
    env = dict(os.environ, TUNESMITH_HOME=str(home))

    def start():
        proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "serve", "--port", str(port)], env=env,
                                start_new_session=True)  # its own process group: kill server and worker together
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=secret, max_retries=0)
        deadline = time.time() + 60
        while True:
            try:
                client.models.list()
                return proc, client
            except openai.APIConnectionError:
                assert time.time() < deadline and proc.poll() is None
                time.sleep(0.2)

    proc, client = start()
    try:
        job = _long_job(client, tiny_model_dir, tmp_path)
        wait_for_checkpoint(client, job.id, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc, client = start()
        done = wait_for(client, job.id)
        assert done.status == "succeeded", done.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
        assert any("stopped responding" in m for m in messages) and any("resumed" in m for m in messages)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


# ── in-process faults through the queue (a Worker in this process, so the fault can be injected) ──

def queued_job(workspace, model_dir, tmp_path, hyperparameters, n_examples=24):
    """A job in the queue of ``workspace``'s database, on ``model_dir``, as the API would make it."""
    from tunesmith.jobs.db import Database, FileRow
    from tunesmith.jobs.fine_tuning import create_job

    db = Database.for_workspace(workspace)
    content = write_jsonl(tmp_path / "train.jsonl", chat_records(n_examples)).read_bytes()
    (workspace.home / "files").mkdir(parents=True, exist_ok=True)
    (workspace.home / "files" / "file-train").write_bytes(content)
    with db.session() as session:
        session.add(FileRow(id="file-train", filename="train.jsonl", purpose="fine-tune", bytes=len(content),
                            created_at=int(time.time()), status="processed", status_details=None,
                            sha256=hashlib.sha256(content).hexdigest()))
    job = create_job(db, {"model": str(model_dir), "training_file": "file-train",
                          "hyperparameters": hyperparameters})
    return db, job["id"]


def _checkpoints(workspace, job):
    from tunesmith.training.checkpoints import checkpoints_by_step, problems_with

    directory = workspace.run_dir(job.run_id) / "checkpoints"
    return {step: problems_with(path) for step, path in checkpoints_by_step(directory)}


def test_disk_full_during_a_checkpoint_fails_the_job_keeping_the_previous_checkpoint(workspace, tiny_model_dir,
                                                                                     tmp_path, monkeypatch):
    import transformers
    from safetensors.torch import load_file

    from tunesmith.jobs.fine_tuning import get_job
    from tunesmith.jobs.worker import Worker

    save_rng_state = transformers.Trainer._save_rng_state

    def disk_fills_up(self, output_dir):  # checkpoint 12's weights and optimizer are written, then ENOSPC
        if self.state.global_step == 12:
            raise OSError(errno.ENOSPC, "No space left on device", output_dir)
        return save_rng_state(self, output_dir)

    monkeypatch.setattr(transformers.Trainer, "_save_rng_state", disk_fills_up)
    db, job_id = queued_job(workspace, tiny_model_dir, tmp_path, {"n_epochs": 3, "batch_size": 4})
    assert Worker(workspace, db, isolate=False).run_one()
    job = get_job(db, job_id)
    assert job.status == "failed" and job.error["code"] == "disk_full", job.error
    assert job.attempt_errors[0]["code"] == "disk_full" and job.fine_tuned_model is None
    assert _checkpoints(workspace, job) == {6: []}  # the partial checkpoint-12 is gone, checkpoint-6 sound
    previous = workspace.run_dir(job.run_id) / "checkpoints" / "checkpoint-6"
    assert load_file(previous / "adapter_model.safetensors")
    assert not (workspace.run_dir(job.run_id) / "incomplete").exists()


def test_memory_error_fails_the_job_as_out_of_memory(workspace, tiny_model_dir, tmp_path, monkeypatch):
    import transformers

    from tunesmith.jobs.fine_tuning import get_job
    from tunesmith.jobs.worker import Worker

    training_step = transformers.Trainer.training_step

    def runs_out_of_memory(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise MemoryError()
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "training_step", runs_out_of_memory)
    db, job_id = queued_job(workspace, tiny_model_dir, tmp_path, {"n_epochs": 1, "batch_size": 4})
    assert Worker(workspace, db, isolate=False).run_one()
    job = get_job(db, job_id)
    assert job.status == "failed" and job.error["code"] == "out_of_memory", job.error
    assert "batch_size" in job.error["message"] and len(job.attempt_errors) == 1


def test_two_workers_and_a_save_longer_than_the_lease_run_the_job_once(workspace, tiny_model_dir, tmp_path,
                                                                       monkeypatch):
    """Every checkpoint takes longer than the whole lease (the old heartbeat, written at step end,
    let a second worker take such a job over). The first worker's heartbeat renews the lease
    throughout: the second never claims or requeues the job, and every step ran once."""
    from tunesmith.jobs.fine_tuning import get_job, list_events
    from tunesmith.jobs.worker import Worker, WorkerSettings
    from tunesmith.training import callbacks

    mark_complete = callbacks.mark_complete
    # A 7 s save against a 6 s lease: long enough for the old heartbeat to lose the job, with room
    # for a heartbeat thread starved by a loaded 2-core machine (renewals come every 2 s, so a
    # stall of up to 4 s is survived; CI once saw a 3 s lease expire under the whole suite's load).
    monkeypatch.setattr(callbacks, "mark_complete", lambda *a: (time.sleep(7.0), mark_complete(*a)))
    settings = WorkerSettings(lease_seconds=6.0)
    db, job_id = queued_job(workspace, tiny_model_dir, tmp_path, {"n_epochs": 2, "batch_size": 8})
    first = Worker(workspace, db, name="first", settings=settings, isolate=False)
    second = Worker(workspace, db, name="second", settings=settings, isolate=False)
    training = threading.Thread(target=first.run_one)
    training.start()
    while get_job(db, job_id).status == "queued":  # first claims it before second may look
        time.sleep(0.01)
    while training.is_alive():
        assert second.reclaim() == [] and not second.run_one()
        time.sleep(0.1)
    job = get_job(db, job_id)
    assert job.status == "succeeded", job.error
    assert (job.attempts, job.lease_generation, job.attempt_errors) == (1, 1, None)
    messages = [e["message"] for e in list_events(db, job_id, None, 100)[0]]
    assert not any("stopped responding" in m or "resumed" in m for m in messages)
    steps = [json.loads(line)["step"] for line in (workspace.run_dir(job.run_id) / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == sorted(set(steps))  # one trainer wrote each step, once


# ── `tunesmith serve` supervises its workers ─────────────────────────────────────────────────

def _family(pid):
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _until(condition, timeout, what):
    deadline = time.time() + timeout
    while not (found := condition()):
        assert time.time() < deadline, what
        time.sleep(0.2)
    return found


def test_serve_restarts_a_dead_worker_and_stops_workers_and_trainers_on_sigterm(tmp_path, tiny_model_dir):
    """Started through the Python API with a workspace of its own (TUNESMITH_HOME names another
    home): the workers train in the server's workspace. A worker killed is replaced; SIGTERM to
    the server leaves no process of it, its workers or their trainers behind."""
    from tunesmith import api
    from tunesmith.workspace import Workspace

    home = tmp_path / "home"
    install_model(home, tiny_model_dir)
    secret, _ = api.create_api_key("serve", workspace=Workspace(home))
    port = free_port()
    code = (f"import pathlib; from tunesmith.web.serve import serve; from tunesmith.workspace import Workspace; "
            f"serve(port={port}, workspace=Workspace(pathlib.Path({str(home)!r})))")
    env = dict(os.environ, TUNESMITH_HOME=str(tmp_path / "elsewhere"))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=secret, max_retries=0)
        _until(lambda: _reachable(client), 60, "the server did not start")
        job = _long_job(client, tiny_model_dir, tmp_path, epochs=50)
        trainers = _until(lambda: [p for p in _family(proc.pid) if "tunesmith.jobs.trainer" in " ".join(p.cmdline())],
                          90, "no trainer started: the workers do not use the server's workspace")
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
        worker = trainers[0].parent()
        worker.kill()
        _until(lambda: [p for p in psutil.Process(proc.pid).children() if p.pid != worker.pid], 10,
               "the dead worker was not replaced")
        family = _family(proc.pid) + trainers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        _until(lambda: not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 10,
               "a worker or trainer outlived the server")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _reachable(client) -> bool:
    try:
        client.models.list()
        return True
    except openai.APIConnectionError:
        return False
