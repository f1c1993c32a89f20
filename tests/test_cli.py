"""The command line: exit codes, machine-readable output, errors that name the problem."""
import json
import sys

import pytest

from tests.conftest import chat_records, write_jsonl
from tunesmith.cli import main


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run the real entry point (error handling included) and return (exit code, stdout, stderr)."""
    def run(*args):
        monkeypatch.setattr(sys, "argv", ["tunesmith", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code or 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


def test_data_check_reports_bad_lines_and_exits_non_zero(tmp_path, workspace, cli):
    records = chat_records(12)
    records[2]["messages"][0]["content"] = ""
    path = write_jsonl(tmp_path / "d.jsonl", records)
    code, out, _ = cli("data", "check", path, "--json")
    assert code == 3
    payload = json.loads(out)
    assert payload["ok"] is False
    assert payload["issues"] == [{"line": 3, "field": "messages[0].content", "code": "empty_content", "message": "is empty"}]


def test_data_check_prints_a_card_with_token_lengths(tmp_path, tiny_model_dir, workspace, cli):
    path = write_jsonl(tmp_path / "d.jsonl", chat_records(12))
    code, out, err = cli("data", "check", path, "--model", tiny_model_dir, "--json", "--max-length", "40")
    assert code == 0, err
    card = json.loads(out)["card"]
    assert card["records"] == 12 and card["lengths"]["min"] > 0 and card["over_max_length"] > 0
    assert card["loss_tokens_per_epoch"] > 0 and card["estimated_seconds_per_epoch"] is not None


def test_data_split_writes_three_files(tmp_path, workspace, cli):
    path = write_jsonl(tmp_path / "d.jsonl", chat_records(20))
    code, _, err = cli("data", "split", path, "--ratios", "0.8,0.1,0.1", "-o", tmp_path / "out")
    assert code == 0, err
    counts = {p.name: len(p.read_text().splitlines()) for p in (tmp_path / "out").glob("*.jsonl")}
    assert counts == {"d.train.jsonl": 16, "d.validation.jsonl": 2, "d.test.jsonl": 2}
    card = json.loads((tmp_path / "out" / "d.split.json").read_text())
    assert card["leakage"]["train-test"] == {"exact": 0, "near": 0}


def test_train_with_bad_config_lists_problems(tmp_path, workspace, cli):
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  train: x.jsonl\ntraining:\n  epoch: 2\n")
    code, _, err = cli("train", config)
    assert code == 2
    assert "c.yaml:4:training.epoch:unknownkey" in _unwrapped(err)


def test_eval_of_unknown_run(tmp_path, workspace, cli):
    code, _, err = cli("eval", "nope", "--data", tmp_path / "x.jsonl")
    assert code == 4 and "no run 'nope'" in err


def test_models_list_json(workspace, cli):
    code, out, _ = cli("models", "list", "--json")
    assert code == 0
    assert {m["name"] for m in json.loads(out)} >= {"smollm2-135m-instruct", "gemma3-270m"}


def test_generate_and_chat_stream_from_a_model_directory(tiny_model_dir, workspace, cli, monkeypatch):
    import io

    code, out, err = cli("generate", tiny_model_dir, "--prompt", "hello", "--max-new-tokens", "5")
    assert code == 0, err
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n/reset\nagain\n/exit\n"))
    code, out, err = cli("chat", tiny_model_dir, "--max-new-tokens", "3")
    assert code == 0, err
    assert out.count("model> ") == 2 and "chatting with" in err


def test_data_clean_json_and_config_file(tmp_path, workspace, cli):
    records = chat_records(12) + chat_records(3)
    records[1]["messages"][0]["content"] = "write to me at someone@example.org"
    path = write_jsonl(tmp_path / "d.jsonl", records)
    config = tmp_path / "clean.yaml"
    config.write_text("pii: drop\nmin_tokens: 1\n")
    code, out, err = cli("data", "clean", path, "-o", tmp_path / "c.jsonl", "--config", config, "--json")
    assert code == 0, err
    card = json.loads(out)
    assert (card["input_records"], card["kept"], card["removed"]) == (15, 12, 3)  # record 1 edited: its copy is unique
    assert card["removed_by_step"] == {"exact_duplicate": 2, "personal_data": 1}
    assert (tmp_path / "c.card.md").exists() and (tmp_path / "c.lengths.png").exists()
    config.write_text("pii: maybe\n")
    code, _, err = cli("data", "clean", path, "-o", tmp_path / "c.jsonl", "--config", config)
    assert code == 2 and "clean.yaml:1:pii" in _unwrapped(err)


def test_data_leakage_exit_code(tmp_path, workspace, cli):
    a = write_jsonl(tmp_path / "a.jsonl", chat_records(10))
    b = write_jsonl(tmp_path / "b.jsonl", chat_records(10)[:2])
    code, out, _ = cli("data", "leakage", a, b, "--json")
    assert code == 1 and json.loads(out)["exact_overlaps"] == 2


def test_data_clean_counts_tokens_with_the_model_tokenizer(tmp_path, tiny_model_dir, workspace, cli):
    records = chat_records(12)
    records[3]["messages"][1]["content"] = "a fairly long answer " * 4  # ~20 words, ~80 byte-level tokens
    path = write_jsonl(tmp_path / "d.jsonl", records)
    code, out, err = cli("data", "clean", path, "-o", tmp_path / "c.jsonl", "--model", tiny_model_dir,
                         "--max-tokens", "60", "--json")
    assert code == 0, err
    card = json.loads(out)
    assert card["removed_by_step"] == {"length": 1} and card["length_unit"] == "tokens"
    rejected = json.loads((tmp_path / "c.rejects.jsonl").read_text().splitlines()[0])
    assert rejected["line"] == 4 and rejected["reason"].startswith("too_long:")


def test_missing_files_and_bad_ratios_are_errors_not_tracebacks(tmp_path, workspace, cli):
    code, _, err = cli("data", "clean", tmp_path / "nope.jsonl", "-o", tmp_path / "x.jsonl")
    assert code == 3 and "no such file" in err and "Traceback" not in err
    path = write_jsonl(tmp_path / "d.jsonl", chat_records(12))
    code, _, err = cli("data", "split", path, "--ratios", "0.5,0.6")
    assert code == 2 and "sum to 1" in err and "Traceback" not in err


def test_classify_train_eval_predict_compare_from_the_command_line(tmp_path, tiny_encoder_dir, workspace, cli):
    import yaml

    from tests.conftest import classification_records

    write_jsonl(tmp_path / "train.jsonl", classification_records(90))
    test = write_jsonl(tmp_path / "test.jsonl", classification_records(21, seed=4))
    recipe = tmp_path / "clf.yaml"
    recipe.write_text(yaml.safe_dump({
        "recipe": "classify", "model": str(tiny_encoder_dir),
        "data": {"train": "train.jsonl", "test": "test.jsonl", "max_length": 64},
        "training": {"epochs": 2, "learning_rate": 3e-3, "batch_size": 16, "eval_steps": 5}}))
    code, out, err = cli("train", recipe)
    assert code == 0, err
    run_id = out.split("run: ")[1].split()[0]

    code, out, err = cli("eval", run_id, "--no-baselines")
    assert code == 0, err
    assert "fine-tuned" in out and "report.html" in out

    code, out, err = cli("predict", run_id, "--text", "where is the parcel please", "--json")
    assert code == 0, err
    [result] = json.loads(out)
    assert result["label"] in {"delivery", "login", "refund"} and len(result["top"]) == 3

    code, _, err = cli("predict", run_id, "--file", test, "-o", tmp_path / "p.jsonl")
    assert code == 0, err
    first = json.loads((tmp_path / "p.jsonl").read_text().splitlines()[0])
    assert set(first["probabilities"]) == {"delivery", "login", "refund"}

    code, out, err = cli("compare", run_id, "-o", tmp_path / "cmp")
    assert code == 0, err
    assert run_id in (tmp_path / "cmp" / "compare.md").read_text()


def test_predict_without_text_or_file_is_a_clear_error(workspace, cli):
    code, _, err = cli("predict", "some-run")
    assert code != 0 and "--text" in err


def test_api_keys_create_list_revoke(workspace, cli):
    code, out, _ = cli("keys", "create", "--name", "ci")
    secret = out.strip()
    assert code == 0 and secret.startswith("ts-")
    code, out, _ = cli("keys", "list")
    key_id = next(word for word in out.split() if word.startswith("key_"))
    assert secret not in out  # the secret is never shown again
    assert cli("keys", "revoke", key_id)[0] == 0
    from tunesmith.jobs.db import Database
    from tunesmith.jobs.keys import verify
    assert not verify(Database.for_workspace(workspace), secret)
    assert cli("keys", "revoke", key_id)[0] != 0


def _unwrapped(text: str) -> str:
    """The text without any whitespace: rich wraps long lines (a long tmp path) at spaces."""
    return "".join(text.split())


@pytest.mark.slow
def test_tune_then_runs_list_show_compare_from_the_command_line(tmp_path, tiny_encoder_dir, workspace, cli):
    import yaml

    from tests.conftest import classification_records

    write_jsonl(tmp_path / "train.jsonl", classification_records(60))
    recipe = tmp_path / "clf.yaml"
    recipe.write_text(yaml.safe_dump({
        "recipe": "classify", "model": str(tiny_encoder_dir), "data": {"train": "train.jsonl", "max_length": 64},
        "training": {"max_steps": 6, "batch_size": 16, "eval_steps": 3}}))
    search = tmp_path / "search.yaml"
    search.write_text("defaults: false\nparams:\n  training.learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    code, out, err = cli("tune", recipe, "--trials", "3", "--search", search, "--study", "clf", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["metric"] == "eval_macro_f1" and summary["direction"] == "maximize"  # the classify default
    assert len(summary["rows"]) == 3 and (workspace.home / "studies" / "clf" / "best.yaml").exists()

    code, out, err = cli("runs", "list", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert sorted(r["kind"] for r in rows) == ["study", "train", "train", "train"]
    trial_runs = [r["run"] for r in rows if r["kind"] == "train"]

    code, out, err = cli("runs", "show", trial_runs[0], "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["params"]["recipe"] == "classify" and "eval_macro_f1" in shown["metrics"]

    code, out, err = cli("runs", "compare", *trial_runs[:2])
    assert code == 0, err
    assert "training.learning_rate" in out

    code, out, err = cli("runs", "show", "clf", "--json")  # a study, by its name
    assert code == 0, err
    study = json.loads(out)
    assert study["kind"] == "study" and len(study["children"]) == 3 and "study/best.yaml" in study["artifacts"]

    code, out, err = cli("runs", "show", "no-such-run")
    assert code == 4 and "no run" in err


# ── hostile input: every bad value is refused with one clear error, never a traceback ─────────

def test_data_check_refuses_an_unknown_format_naming_the_formats(tmp_path, workspace, cli):
    path = write_jsonl(tmp_path / "d.jsonl", chat_records(12))
    code, _, err = cli("data", "check", path, "--format", "bogus")
    assert code == 2 and "Traceback" not in err and "'bogus'" in err
    assert all(f in err for f in ("chat", "prompt_completion", "instruction", "classification", "preference"))
    code, out, err = cli("data", "check", path, "--format", "CHAT", "--json")  # any case
    assert code == 0, err
    assert json.loads(out)["format"] == "chat"


@pytest.mark.parametrize("option, value", [("--max-length", "-5"), ("--max-length", "0"), ("--min-examples", "0")])
def test_data_check_refuses_a_limit_below_one(tmp_path, workspace, cli, option, value):
    path = write_jsonl(tmp_path / "d.jsonl", chat_records(12))
    code, _, err = cli("data", "check", path, option, value)
    assert code == 2 and option in err and "Traceback" not in err


def test_data_check_with_an_unusable_model_fails_naming_the_models(tmp_path, tiny_model_dir, workspace, cli):
    from tests.server.test_openai_sdk import install_model

    install_model(workspace.home, tiny_model_dir)
    path = write_jsonl(tmp_path / "d.jsonl", chat_records(12))
    code, _, err = cli("data", "check", path, "--model", "no-such-model")  # exited 0, before
    assert code == 4 and "Traceback" not in err and "unknown model 'no-such-model'" in err
    assert all(m in _unwrapped(err) for m in ("gemma3-270m", "smollm2-135m-instruct", "Pulledhere:tiny-chat"))
    code, _, err = cli("data", "check", path, "--model", tmp_path)  # a directory, but no model in it
    assert code == 4 and "notaHuggingFacemodel" in _unwrapped(err)
    code, out, err = cli("data", "check", path, "--json")  # the default model, not pulled here: only a note
    assert code == 0 and "not pulled yet" in " ".join(json.loads(out)["card"]["notes"]), err


def test_missing_input_files_are_refused_before_anything_runs(tmp_path, workspace, cli):
    present = write_jsonl(tmp_path / "a.jsonl", chat_records(10))
    missing = tmp_path / "nope.jsonl"
    for args in (("data", "leakage", present, missing),  # exited 0, "no overlap", before
                 ("label", "suggest", "some-run", missing, "-k", "5", "-o", tmp_path / "s.jsonl"),
                 ("label", "prelabel", "some-run", missing, "-o", tmp_path / "p.jsonl"),
                 ("label", "prelabel", "some-run", present, "-o", tmp_path / "p.jsonl", "--examples", missing),
                 ("data", "augment", present, "-o", tmp_path / "x.jsonl", "--test", missing),  # was ignored
                 ("monitor", "some-model", "--retrain", "--fresh", missing),
                 ("monitor", "some-model", "--retrain", "--test", missing)):
        code, _, err = cli(*args)
        assert code == 2 and "nope.jsonl" in _unwrapped(err) and "does not exist" in err and "Traceback" not in err, args


@pytest.mark.parametrize("args, option", [
    (("generate", "m", "-p", "hi", "--max-new-tokens", "0"), "--max-new-tokens"),
    (("generate", "m", "-p", "hi", "--temperature", "-1"), "--temperature"),
    (("chat", "m", "--max-new-tokens", "-3"), "--max-new-tokens"),
    (("eval", "r", "--batch-size", "0"), "--batch-size"),
    (("eval", "r", "--max-examples", "0"), "--max-examples"),
    (("eval", "r", "--few-shot", "-1"), "--few-shot"),
    (("predict", "r", "--text", "hi", "--top-k", "0"), "--top-k"),
    (("data", "augment", "{data}", "-o", "x.jsonl", "--temperature", "-0.5"), "--temperature"),
    (("data", "augment", "{data}", "-o", "x.jsonl", "--min-similarity", "2"), "--min-similarity"),
    (("tune", "{data}", "--threads", "0"), "--threads"),
    (("train", "{data}", "--node-rank", "-1"), "--node-rank"),
    (("methods", "compare", "{data}", "--eval-examples", "0"), "--eval-examples"),
    (("label", "suggest", "r", "{data}", "-k", "5", "-o", "x.jsonl", "--diversity", "0.5"), "--diversity"),
    (("label", "prelabel", "r", "{data}", "-o", "x.jsonl", "--shots", "-1"), "--shots"),
    (("worker", "--poll", "0"), "--poll"),  # polled without pausing, before
    (("worker", "--poll", "-1"), "--poll"),
])
def test_negative_or_zero_numbers_are_refused(tmp_path, workspace, cli, args, option):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records(10))
    code, _, err = cli(*(str(a).format(data=data) for a in args))
    assert code == 2 and option in err and "Traceback" not in err


def test_an_unexpected_error_is_one_line_not_a_traceback(tmp_path, workspace, cli, monkeypatch):
    from tunesmith import api

    monkeypatch.setattr(api, "list_models", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    code, _, err = cli("models", "list")
    assert code == 1 and "RuntimeError: boom" in err and "TUNESMITH_DEBUG=1" in err and "Traceback" not in err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = cli("data", "split", write_jsonl(tmp_path / "d.jsonl", chat_records(20)), "-o", blocker / "out")
    assert code == 1 and "a-file" in _unwrapped(err) and "Traceback" not in err  # the system's reason, one line


def test_a_missing_optional_extra_is_named_with_its_install_command(tmp_path, workspace, cli, monkeypatch):
    from tunesmith import api

    def no_optuna(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'optuna'", name="optuna")

    monkeypatch.setattr(api, "tune", no_optuna)
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  train: t.jsonl\n")
    code, _, err = cli("tune", config, "--trials", "1")
    assert code == 1
    assert 'pip install "tunesmith[search]"' in " ".join(err.split())
    assert "Traceback" not in err
