"""Every training and evaluation run recorded in MLflow; tracking failures never stop training."""
import json
import time

import pytest

import tunesmith
from tests.conftest import chat_records, write_jsonl
from tunesmith.config import load_config
from tunesmith.files import sha256_file
from tunesmith.tracking import store

pytestmark = pytest.mark.slow

FAST = ["training.batch_size=4", "training.learning_rate=0.01", "training.eval_steps=5", "training.logging_steps=1",
        "lora.r=8", "training.max_steps=10"]


def tiny_config(model_dir, data, *extra):
    return load_config(None, [f"model={model_dir}", f"data.train={data}", *FAST, *extra])


def local_client(workspace):
    return store.client(store.destination(workspace))


def test_a_training_run_is_recorded_with_config_metrics_data_and_adapter(tiny_model_dir, chat_file, workspace):
    result = tunesmith.train(tiny_config(tiny_model_dir, chat_file), workspace=workspace)
    tracking = json.loads((result.run.dir / "tracking.json").read_text())
    assert tracking["tracking_uri"] == f"sqlite:///{workspace.home / 'mlflow.db'}"

    client = local_client(workspace)
    mlrun = client.get_run(tracking["mlflow_run_id"])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.tags["tunesmith.run_id"] == result.run.id
    assert {mlrun.data.tags[k] for k in ("recipe", "method")} == {"sft", "lora"}
    assert mlrun.data.tags["base_model"] == result.run.info()["base_model"]
    assert mlrun.data.params["training.learning_rate"] == "0.01"
    assert mlrun.data.params["lora.r"] == "8"
    assert mlrun.data.params["dataset.train.sha256"] == sha256_file(chat_file)
    assert mlrun.data.params["dataset.train.records"] == "40"
    losses = client.get_metric_history(mlrun.info.run_id, "loss")
    assert [m.step for m in losses] == list(range(1, 11))  # every logged step, at its step
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "eval_loss")] == [5, 10]
    assert mlrun.data.metrics["final.best_eval_loss"] == pytest.approx(result.summary["best_eval_loss"])
    [dataset] = [d.dataset for d in mlrun.inputs.dataset_inputs]
    assert (dataset.name, dataset.source) == ("train", str(chat_file))
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in artifacts
    assert {a.path for a in client.list_artifacts(mlrun.info.run_id, "run")} >= {"run/config.yaml", "run/metrics.jsonl"}
    # artefacts live in the home, not in whatever directory the command ran from
    assert mlrun.info.artifact_uri.startswith((workspace.home / "mlartifacts").as_uri())


def test_an_evaluation_logs_as_a_child_and_runs_list_show_compare_read_the_store(tiny_model_dir, chat_file, workspace,
                                                                                 tmp_path):
    a = tunesmith.train(tiny_config(tiny_model_dir, chat_file, "run_name=a"), workspace=workspace).run
    b = tunesmith.train(tiny_config(tiny_model_dir, chat_file, "run_name=b", "training.learning_rate=0.002"),
                        workspace=workspace).run
    test = write_jsonl(tmp_path / "test.jsonl", chat_records(6, seed=1))
    tunesmith.evaluate(a.id, test, samples=0, baselines=False, workspace=workspace, log=lambda m: None)

    rows = tunesmith.tracked_runs(workspace=workspace)
    assert [(r["run"], r["kind"], r["status"], r["tracked"]) for r in rows] == [
        (a.id, "train", "FINISHED", True), (b.id, "train", "FINISHED", True)]
    assert rows[0]["test"] is not None and rows[1]["test"] is None  # only a was evaluated

    shown = tunesmith.show_run(a.id, workspace=workspace)
    assert shown["metrics"]["loss"]["points"] == 10
    assert "test.loss" in shown["metrics"]
    [child] = shown["children"]
    assert child["kind"] == "eval" and "metrics.tuned.loss" in child["metrics"]
    assert "adapter/adapter_model.safetensors" in shown["artifacts"]

    compared = tunesmith.compare_tracked([a.id, b.id], workspace=workspace)
    assert compared["params"]["training.learning_rate"] == ["0.01", "0.002"]
    assert "lora.r" not in compared["params"]  # the same in both: not a difference
    assert len(compared["metrics"]["final.best_eval_loss"]) == 2


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9", "sqlite:///{home}/not-a-dir/mlflow.db"])
def test_tracking_failures_never_stop_training(tiny_model_dir, chat_file, workspace, uri, monkeypatch):
    workspace.home.mkdir(parents=True, exist_ok=True)
    (workspace.home / "not-a-dir").write_text("a file where the store's directory should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.format(home=workspace.home))
    started = time.time()
    result = tunesmith.train(tiny_config(tiny_model_dir, chat_file), workspace=workspace)
    assert time.time() - started < 120  # a dead server costs seconds, not MLflow's minutes of retries

    assert result.run.info()["status"] == "succeeded"
    events = [json.loads(line) for line in (result.run.dir / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["tracking_failed"]  # one warning, then tracking is off
    logged = [json.loads(line) for line in result.run.metrics_path.read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == list(range(1, 11))  # metrics.jsonl is complete
    rows = tunesmith.tracked_runs(workspace=workspace, tracking_uri=f"sqlite:///{workspace.home / 'other.db'}")
    assert [(r["run"], r["tracked"]) for r in rows] == [(result.run.id, False)]  # still listed, as untracked

    # The store is back: `runs sync` records the run from its directory, every step included.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    [synced] = tunesmith.sync_runs(workspace=workspace)
    assert synced["synced"] and synced["run"] == result.run.id
    client = local_client(workspace)
    assert [m.step for m in client.get_metric_history(synced["mlflow_run_id"], "loss")] == list(range(1, 11))
    assert client.get_run(synced["mlflow_run_id"]).data.params["lora.r"] == "8"
    assert tunesmith.sync_runs(workspace=workspace) == []  # nothing left to sync


def test_a_resumed_run_logs_on_into_the_same_mlflow_run(tiny_model_dir, chat_file, workspace):
    from tunesmith.training.callbacks import MetricsLog

    class Interrupt(MetricsLog):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                raise KeyboardInterrupt

    config = tiny_config(tiny_model_dir, chat_file)
    with pytest.raises(tunesmith.TunesmithError):
        tunesmith.train(config, workspace=workspace, callbacks=[Interrupt(workspace.home / "unused.jsonl")])
    [run] = tunesmith.list_runs(workspace=workspace)
    first = json.loads((run.dir / "tracking.json").read_text())["mlflow_run_id"]
    client = local_client(workspace)
    assert client.get_run(first).info.status == "KILLED"

    tunesmith.resume(run.id, workspace=workspace)
    assert json.loads((run.dir / "tracking.json").read_text())["mlflow_run_id"] == first
    assert client.get_run(first).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(first, "loss")]
    assert max(steps) == 10 and len(client.search_runs([client.get_run(first).info.experiment_id])) == 1


def test_report_to_none_tracks_nothing(tiny_model_dir, chat_file, workspace):
    result = tunesmith.train(tiny_config(tiny_model_dir, chat_file, "tracking.report_to=none"), workspace=workspace)
    assert not (result.run.dir / "tracking.json").exists()
    assert not (workspace.home / "mlflow.db").exists()


def test_report_to_wandb_writes_an_offline_run_where_wandb_is_installed(tiny_model_dir, chat_file, workspace,
                                                                         monkeypatch):
    pytest.importorskip("wandb")
    for variable in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_API_KEY"):
        monkeypatch.setenv(variable, "")  # recorded, so whatever the run sets is undone after the test
        monkeypatch.delenv(variable)
    result = tunesmith.train(tiny_config(tiny_model_dir, chat_file, "tracking.report_to=[mlflow, wandb]"),
                             workspace=workspace)
    offline = list((result.run.dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))  # W&B's own log, for `wandb sync` later
    assert json.loads((result.run.dir / "tracking.json").read_text())["mlflow_run_id"]  # and MLflow as well
