"""Faults: a worker killed with SIGKILL mid-training, a job cancelled while it runs."""
import json
import os
import signal
import subprocess
import sys
import time

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
    from tunesmith.server.app import create_app
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
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # what the database last heard

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
