"""The server driven by the official `openai` SDK, unchanged but for base_url, on a live
127.0.0.1 server: files, a fine-tuning job on a tiny model trained by a worker process, events,
checkpoints, models, chat (streaming and not), and OpenAI's error shapes."""
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import chat_records, write_jsonl

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow


SERVER: dict = {}


def install_model(home, model_dir, name="tiny-chat"):
    """Put a model into the server's home as if pulled: the API accepts only models it has."""
    import shutil

    target = home / "models" / name
    shutil.copytree(model_dir, target)
    (target / "tunesmith-model.json").write_text(json.dumps({"description": "tiny test model",
                                                             "architecture": "llama", "task": "causal-lm"}))


def home_with_model(tmp_path_factory, model_dir, label: str):
    """A fresh workspace (``label`` names its directory) holding ``model_dir`` as ``tiny-chat``."""
    from tunesmith.workspace import Workspace

    workspace = Workspace(tmp_path_factory.mktemp(label))
    install_model(workspace.home, model_dir)
    return workspace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(app):
    """``app`` on a free loopback port in a thread of this process; yields the port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_model_dir):
    from tunesmith import api
    from tunesmith.web.app import ServerSettings, create_app
    from tunesmith.workspace import Workspace

    home = tmp_path_factory.mktemp("server-home")
    workspace = Workspace(home)
    install_model(home, tiny_model_dir)
    secret, _ = api.create_api_key("tests", workspace=workspace)
    app = create_app(workspace, ServerSettings(max_upload_bytes=64 * 1024))
    SERVER["app"] = app
    with served(app) as port:
        env = dict(os.environ, TUNESMITH_HOME=str(home))
        worker = subprocess.Popen([sys.executable, "-m", "tunesmith", "worker", "--poll", "0.2"], env=env)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=secret, max_retries=0)
        yield client, port, home
        worker.kill()


def wait_for(client, job_id, statuses=("succeeded", "failed", "cancelled"), timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.status}")


def test_upload_train_poll_and_chat_with_the_fine_tuned_model(live, tiny_model_dir, tmp_path):
    client, _, _ = live
    data = write_jsonl(tmp_path / "train.jsonl", chat_records(24))
    uploaded = client.files.create(file=open(data, "rb"), purpose="fine-tune")
    assert uploaded.status == "processed" and uploaded.filename == "train.jsonl"
    assert client.files.retrieve(uploaded.id).bytes == data.stat().st_size
    assert client.files.content(uploaded.id).read() == data.read_bytes()
    assert uploaded.id in [f.id for f in client.files.list()]

    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=uploaded.id, suffix="demo",
                                         seed=7, hyperparameters={"n_epochs": 2, "batch_size": 4},
                                         metadata={"team": "tests"})
    assert job.status == "queued" and job.seed == 7
    job = wait_for(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith("ft:") and ":tunesmith:demo:" in job.fine_tuned_model
    assert job.trained_tokens > 0 and job.finished_at >= job.created_at
    assert job.hyperparameters.n_epochs == 2
    [results] = job.result_files
    csv_text = client.files.content(results).read().decode()
    assert csv_text.startswith("step,train_loss,train_accuracy,valid_loss") and len(csv_text.splitlines()) > 2
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "tests"})] == [job.id]

    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert any(m.startswith("Step ") for m in messages) and "The job has successfully completed" in messages
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints and checkpoints[0].fine_tuned_model_checkpoint.startswith(job.fine_tuned_model + ":ckpt-step-")

    names = [m.id for m in client.models.list()]
    assert job.fine_tuned_model in names and checkpoints[0].fine_tuned_model_checkpoint in names
    assert client.models.retrieve(job.fine_tuned_model).id == job.fine_tuned_model

    reply = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": "Which colour is item 3?"}])
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 8
    stream = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=8, temperature=0, stream=True,
                                            messages=[{"role": "user", "content": "Which colour is item 3?"}])
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert streamed == reply.choices[0].message.content  # greedy: the same reply either way
    two = client.chat.completions.create(model=checkpoints[-1].fine_tuned_model_checkpoint, n=2, max_tokens=4,
                                         temperature=1.0, seed=1, messages=[{"role": "user", "content": "hi"}])
    assert len(two.choices) == 2
    assert client.models.delete(checkpoints[0].fine_tuned_model_checkpoint).deleted
    assert checkpoints[0].fine_tuned_model_checkpoint not in [m.id for m in client.models.list()]


def test_invalid_training_file_fails_the_job_with_the_line(live, tiny_model_dir, tmp_path):
    client, _, _ = live
    records = chat_records(12)
    records[4]["messages"][1]["role"] = "robot"
    bad = client.files.create(file=open(write_jsonl(tmp_path / "bad.jsonl", records), "rb"), purpose="fine-tune")
    assert bad.status == "error" and "line 5" in bad.status_details
    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=bad.id)
    assert job.status == "failed" and job.error.code == "invalid_training_file"
    assert job.error.param == "training_file" and "line 5" in job.error.message


def test_errors_have_openai_shapes(live, tmp_path):
    client, port, _ = live
    with pytest.raises(openai.NotFoundError) as found:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert found.value.body["code"] == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="ts-wrong", max_retries=0).models.list()
    import httpx
    assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"prompt": "x", "completion": "y"}\n' * 3000)  # ~100 KB > the 64 KB limit
    with pytest.raises(openai.APIStatusError) as too_big:
        client.files.create(file=open(big, "rb"), purpose="fine-tune")
    assert too_big.value.status_code == 413
    files_dir = live[2] / "files"
    assert not [p for p in files_dir.iterdir() if p.name.endswith(".part")]  # nothing half-written kept
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    with pytest.raises(openai.BadRequestError) as not_available:  # a path is never taken as a model
        client.fine_tuning.jobs.create(model="/etc", training_file="file-x")
    assert not_available.value.body["code"] == "model_not_available"


def test_classifier_endpoint(live, tiny_encoder_dir, tiny_model_dir, tmp_path):
    import httpx

    from tests.conftest import classification_records
    from tests.training.test_classify import classify_config
    from tunesmith import api
    from tunesmith.workspace import Workspace

    client, port, home = live
    workspace = Workspace(home)
    train = write_jsonl(tmp_path / "intents.jsonl", classification_records(60))
    run = api.train(classify_config(train, tiny_encoder_dir, **{"training.epochs": 2}), workspace=workspace).run
    response = httpx.post(f"http://127.0.0.1:{port}/v1/classifications", headers={"Authorization": f"Bearer {client.api_key}"},
                          json={"model": run.id, "input": ["where is my parcel", "reset my password"]})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 2 and set(data[0]["probabilities"]) == {"delivery", "login", "refund"}
    assert abs(sum(data[0]["probabilities"].values()) - 1) < 1e-4
    missing = httpx.post(f"http://127.0.0.1:{port}/v1/classifications", headers={"Authorization": f"Bearer {client.api_key}"},
                         json={"model": "no-such-run", "input": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    as_path = httpx.post(f"http://127.0.0.1:{port}/v1/classifications", headers={"Authorization": f"Bearer {client.api_key}"},
                         json={"model": str(run.dir), "input": "x"})  # the run's directory: never taken as a path
    assert as_path.status_code == 404



def test_two_fine_tunes_interleave_on_one_loaded_base(live, tmp_path):
    from tunesmith.jobs.db import JobRow
    from tunesmith.models import engine
    from tunesmith.workspace import Workspace

    client, _, home = live
    data = write_jsonl(tmp_path / "train.jsonl", chat_records(20, seed=1))
    uploaded = client.files.create(file=open(data, "rb"), purpose="fine-tune")
    jobs = [client.fine_tuning.jobs.create(model="tiny-chat", training_file=uploaded.id, suffix=f"s{i}", seed=i,
                                           hyperparameters={"n_epochs": 3, "batch_size": 4,
                                                            "learning_rate_multiplier": 20})
            for i in range(2)]
    names = [wait_for(client, j.id).fine_tuned_model for j in jobs]
    ask = [{"role": "user", "content": "Which colour is item 2?"}]
    replies = [client.chat.completions.create(model=names[i % 2], messages=ask, max_tokens=6, temperature=0)
               .choices[0].message.content for i in range(4)]
    assert replies[0] == replies[2] and replies[1] == replies[3]  # switching back gives the same model
    slots = SERVER["app"].state.models.slots
    assert list(slots) == ["tiny-chat"] and len(slots["tiny-chat"].adapter_names()) >= 2  # one base, adapters on it
    for job, reply in zip(jobs, replies):  # each reply is what that fine-tune alone would say
        with SERVER["app"].state.db.session() as session:
            run_id = session.get(JobRow, job.id).run_id
        alone = engine.load(run_id, Workspace(home), merge=True)
        assert engine.generate(alone, [ask], max_new_tokens=6)[0] == reply.strip()


def test_a_dpo_job_on_openai_preference_lines(live, tmp_path):
    from tests.training.test_preference import pair_records

    client, _, home = live
    lines = [{"input": {"messages": [{"role": "user", "content": r["prompt"] if isinstance(r["prompt"], str)
                                      else r["prompt"][0]["content"]}]},
              "preferred_output": [{"role": "assistant", "content": "Yes, it is ready."}],
              "non_preferred_output": [{"role": "assistant", "content": "No."}]} for r in pair_records(12)]
    uploaded = client.files.create(file=open(write_jsonl(tmp_path / "dpo.jsonl", lines), "rb"), purpose="fine-tune")
    assert uploaded.status == "processed"
    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=uploaded.id, suffix="pref", seed=0,
                                         method={"type": "dpo", "dpo": {"hyperparameters": {
                                             "beta": 0.2, "n_epochs": 2, "batch_size": 4,
                                             "learning_rate_multiplier": 100}}})
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.method.type == "dpo" and done.method.dpo.hyperparameters.beta == 0.2
    reply = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=4, temperature=0,
                                           messages=[{"role": "user", "content": "Is item 1 ready?"}])
    assert reply.choices[0].message.content is not None
    with pytest.raises(openai.BadRequestError, match="beta must be"):
        client.fine_tuning.jobs.create(model="tiny-chat", training_file=uploaded.id,
                                       method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 5}}})
