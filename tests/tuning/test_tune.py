"""Hyperparameter search: trials are training runs, pruning stops weak ones, workers share a study."""
import json

import pytest

import tunesmith
from tunesmith.config import load_config
from tunesmith.errors import ConfigError
from tunesmith.tracking import store
from tunesmith.tuning.space import load_search

FAST = ["training.batch_size=4", "training.logging_steps=1", "lora.r=8", "training.max_steps=12",
        "training.eval_steps=3", "training.save_steps=12"]

# The learning rate decides everything here: from 1e-4 (barely moves) to 5e-2 (learns fast), so
# trials differ clearly at every evaluation and the median rule has something to prune.
SEARCH = """\
metric: eval_loss
pruner: {type: median, startup_trials: 1, warmup_steps: 0}
sampler: {seed: 3, startup_trials: 4}
defaults: false
params:
  training.learning_rate: {type: float, low: 1.0e-4, high: 5.0e-2, log: true}
"""


def tiny_config(model_dir, data, *extra):
    return load_config(None, [f"model={model_dir}", f"data.train={data}", *FAST, *extra])


@pytest.fixture
def search_file(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(SEARCH)
    return path


@pytest.mark.slow
def test_a_study_of_four_trials_prunes_and_writes_the_best_config(tiny_model_dir, chat_file, workspace, search_file):
    summary = tunesmith.tune(tiny_config(tiny_model_dir, chat_file, "run_name=t"), trials=4, search=search_file,
                             study="s4", workspace=workspace)
    states = [row["state"] for row in summary["rows"]]
    assert len(states) == 4 and set(states) <= {"complete", "pruned"}
    assert "pruned" in states  # the median rule stopped at least one trial early
    for row in summary["rows"]:
        run = tunesmith.get_run(row["run"], workspace=workspace)
        steps = [json.loads(line)["step"] for line in run.metrics_path.read_text().splitlines()]
        assert (max(steps) < 12) == (row["state"] == "pruned")  # a pruned trial really stopped training

    best = load_config(summary["files"]["best_config"])
    best_row = next(r for r in summary["rows"] if r["trial"] == summary["best_trial"])
    assert best.training.learning_rate == pytest.approx(best_row["training.learning_rate"])
    assert best.training.max_steps == 12 and best.run_name == "s4-best"
    completed = [r["value"] for r in summary["rows"] if r["state"] == "complete"]
    assert summary["best_value"] == min(completed)
    for kind in ("html", "csv", "markdown", "history"):
        assert (workspace.home / "studies" / "s4").joinpath(summary["files"][kind]).exists()

    client = store.client(store.destination(workspace))
    [parent] = client.search_runs([client.get_experiment_by_name("tunesmith").experiment_id],
                                  filter_string="tags.`tunesmith.kind` = 'study'")
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4  # each trial is a run nested under the study
    assert parent.info.status == "FINISHED" and float(parent.data.metrics["best_value"]) == summary["best_value"]


@pytest.mark.slow
def test_two_processes_sharing_one_sqlite_study_run_each_trial_exactly_once(tiny_model_dir, chat_file, workspace,
                                                                            search_file):
    import os
    import subprocess
    import sys

    config = tiny_config(tiny_model_dir, chat_file, "run_name=p", "tracking.report_to=none", "training.max_steps=30",
                         "training.eval_steps=10", "training.save_steps=30")
    queued = tunesmith.tune(config, trials=6, search=search_file, study="shared", workers=0, workspace=workspace)
    assert queued["queued"] == 6
    command = [sys.executable, "-m", "tunesmith", "tune", "--join", "shared", "--storage", queued["storage"],
               "--threads", "1", "--no-report"]
    env = os.environ | {"TUNESMITH_HOME": str(workspace.home)}
    workers = [subprocess.Popen(command + ["--worker-index", str(i)], env=env) for i in (1, 2)]
    assert [w.wait(timeout=600) for w in workers] == [0, 0]

    summary = tunesmith.tune(None, join="shared", workspace=workspace)  # nothing left: only the report
    rows = summary["rows"]
    assert sorted(r["trial"] for r in rows) == list(range(6))  # no extra trial was created
    assert all(r["state"] in ("complete", "pruned") for r in rows)
    assert len({r["run"] for r in rows}) == 6
    trial_dirs = [d for d in workspace.runs_dir.iterdir() if "-shared-t" in d.name]
    assert len(trial_dirs) == 6  # no trial was trained twice
    assert len({r["worker"] for r in rows}) == 2  # both processes took trials from the one queue


def test_search_space_errors_name_the_file_line_and_key(tiny_model_dir, chat_file, tmp_path):
    bad = tmp_path / "search.yaml"
    bad.write_text("params:\n  training.learning_rate: {type: float, low: 0.5, high: 2.0}\n"
                   "  lora.rank: {type: categorical, choices: [4, 8]}\n  training.epochs: {type: int}\n")
    with pytest.raises(ConfigError) as e:
        load_search(bad, tiny_config(tiny_model_dir, chat_file))
    assert f"{bad}:4: params.training.epochs" in str(e.value)  # incomplete spec
    bad.write_text("params:\n  training.learning_rate: {type: float, low: 0.5, high: 2.0}\n"
                   "  lora.rank: {type: categorical, choices: [4, 8]}\n")
    with pytest.raises(ConfigError) as e:
        load_search(bad, tiny_config(tiny_model_dir, chat_file))
    message = str(e.value)
    assert f"{bad}:2: params.training.learning_rate: value 2.0 is not valid" in message
    assert f"{bad}:3: params.lora.rank" in message


def test_the_default_space_follows_the_recipe_and_method(tiny_model_dir, chat_file):
    lora = load_search(None, tiny_config(tiny_model_dir, chat_file))
    assert {"training.learning_rate", "lora.r", "lora.alpha", "lora.dropout", "training.epochs",
            "training.batch_size", "training.warmup_ratio"} == set(lora.params)
    assert (lora.metric, lora.direction) == ("eval_loss", "minimize")
    full = load_search(None, tiny_config(tiny_model_dir, chat_file, "method=full"))
    assert not any(key.startswith("lora.") for key in full.params)
    assert full.params["training.learning_rate"].high < lora.params["training.learning_rate"].high


@pytest.mark.slow
def test_a_trial_left_running_by_a_dead_worker_is_failed_and_queued_again(tiny_model_dir, chat_file, workspace,
                                                                          search_file, monkeypatch):
    from rich.console import Console

    from tunesmith.tuning import study as studies

    monkeypatch.setattr(studies, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(studies, "GRACE_SECONDS", 1)
    config = tiny_config(tiny_model_dir, chat_file, "tracking.report_to=none")
    url = studies.storage_url(workspace, None)
    studies.create_study(config, load_search(search_file, config), 2, url, "dead")
    study, storage, config, spec = studies.load_study("dead", url, 0)
    orphan = studies.claim_queued_trial(study, storage)  # a worker claims trial 0, beats once, and dies
    storage.record_heartbeat(orphan)
    import time
    time.sleep(2.5)

    ran = studies.work(study, storage, config, spec, workspace, Console(quiet=True))
    trials = study.get_trials()
    assert ran == 2 and [t.state.name for t in trials][0] == "FAIL"
    assert [t.number for t in trials if t.state.name in ("COMPLETE", "PRUNED")] == [1, 2]
    assert trials[2].system_attrs["failed_trial"] == 0  # the retry of the dead worker's trial


@pytest.mark.slow
def test_ctrl_c_stops_the_worker_and_requeues_the_interrupted_point(tiny_model_dir, chat_file, workspace, search_file,
                                                                    monkeypatch):
    from rich.console import Console

    from tunesmith.tuning import study as studies

    armed = [True]

    def interrupt_at_step_4(self, args, state, control, **kwargs):
        if armed[0] and state.global_step == 4:
            raise KeyboardInterrupt

    config = tiny_config(tiny_model_dir, chat_file, "tracking.report_to=none")
    url = studies.storage_url(workspace, None)
    studies.create_study(config, load_search(search_file, config), 2, url, "ctrl-c")
    study, storage, config, spec = studies.load_study("ctrl-c", url, 0)
    monkeypatch.setattr(studies.PruningCallback, "on_step_end", interrupt_at_step_4, raising=False)
    with pytest.raises(tunesmith.TunesmithError, match="interrupted"):
        studies.work(study, storage, config, spec, workspace, Console(quiet=True))
    first = study.get_trials()[0]
    assert first.state.name == "FAIL" and "interrupted" in first.user_attrs["error"]
    armed[0] = False

    assert studies.work(study, storage, config, spec, workspace, Console(quiet=True)) == 2  # the queue goes on
    retry = next(t for t in study.get_trials() if t.user_attrs.get("retry_of") == 0)
    assert retry.params == first.params and retry.state.name in ("COMPLETE", "PRUNED")
