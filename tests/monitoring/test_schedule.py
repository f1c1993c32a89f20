"""Monitoring from the server on a schedule: a check is `tunesmith monitor` in a child process;
a due model is checked, its outcome kept across restarts, and an alert that calls for it queues
a retraining job (judged later by the worker that trains it)."""
import json

import pytest

from tests.conftest import classification_records, write_jsonl
from tests.monitoring.test_monitor import MOVED, classifier, classify, client_for  # noqa: F401 (fixture)
from tunesmith.jobs.db import Database
from tunesmith.jobs.fine_tuning import get_job
from tunesmith.monitoring.schedule import Schedule, check, due, read_state

pytestmark = pytest.mark.slow


def test_due_models_and_the_check_command(workspace, tmp_path):
    schedule = Schedule(["a", "b"], every_seconds=3600, config=tmp_path / "m.yaml", retrain=True, alias="live")
    assert due(schedule, workspace, now=10_000) == ["a", "b"]
    (workspace.home / "monitor").mkdir(parents=True)
    (workspace.home / "monitor" / "schedule.json").write_text(json.dumps({"a": {"checked_at": 9_000}}))
    assert due(schedule, workspace, now=10_000) == ["b"] and due(schedule, workspace, now=12_601) == ["a", "b"]
    command = schedule.command("a")
    assert command[2:8] == ["tunesmith", "monitor", "a", "--since", "60m", "--json"]
    assert command[8:] == ["--config", str(tmp_path / "m.yaml"), "--retrain", "--submit", "--tolerance", "0.0",
                           "--alias", "live"]


def test_a_scheduled_check_that_alerts_queues_a_retraining_job(workspace, classifier, tiny_encoder_dir, tmp_path):
    client = client_for(workspace)
    moved = classify(client, classifier.id, [MOVED[i % 3].format(i) for i in range(40)])
    item = client.post("/v1/tunesmith/feedback", json={"request_id": f"{moved['id']}:0", "label": "refund"}).json()
    client.post(f"/v1/tunesmith/feedback/{item['id']}", json={"status": "accepted"})
    test = write_jsonl(tmp_path / "test.jsonl", classification_records(12, seed=9))
    schedule = Schedule([classifier.id], every_seconds=3600, retrain=True, alias="intents",
                        extra_args=["--set", f"embedding_model={tiny_encoder_dir}", "--set", "permutations=100",
                                    "--set", "min_requests=20", "--test", str(test)])

    outcome = check(schedule, classifier.id, workspace)
    assert outcome["exit_code"] == 0 and "error" not in outcome, outcome
    assert "embedding_drift" in outcome["alerts"] and outcome["requests"] == 1
    job = get_job(Database.for_workspace(workspace), outcome["retraining_job"])
    assert job.status == "queued" and job.job_metadata["retrain_of"] == classifier.id
    assert read_state(workspace)[classifier.id]["retraining_job"] == job.id
    assert due(schedule, workspace) == []  # checked: not due again for an hour


def test_serve_refuses_a_schedule_it_cannot_keep():
    from typer.testing import CliRunner

    from tunesmith.cli import app

    no_log = CliRunner().invoke(app, ["serve", "--monitor", "m", "--no-request-log"])
    assert no_log.exit_code != 0 and "drop --no-request-log" in str(no_log.exception)
    bad_every = CliRunner().invoke(app, ["serve", "--monitor", "m", "--monitor-every", "daily"])
    assert bad_every.exit_code != 0 and "1d, 6h or 30m" in str(bad_every.exception)
