"""Distillation: prompts read (bad lines named), the teacher asked once per prompt and every
answer kept as it arrives (a killed run resumed asks only the rest), a teacher that cannot be
reached, refuses the key or rate-limits; end to end on a tiny student, and with an in-process
``tunesmith serve`` as the teacher."""
from __future__ import annotations

import json
import socket
from collections import Counter

import pytest

from tests.conftest import chat_records, fake_endpoint, write_jsonl
from tunesmith.distill.distill import Options, Teacher, ask_teacher, distill, read_prompts, split_held_out
from tunesmith.errors import DataError, TunesmithError
from tunesmith.models.remote import RemoteChat, RemoteError, chat_client


class Scripted:
    """A teacher answering ``answer(prompt)``, raising ``stop_after`` answers in (a kill)."""

    name = "scripted"

    def __init__(self, stop_after: int | None = None):
        self.asked: list[str] = []
        self.stop_after = stop_after

    def chat(self, messages, max_tokens=256, temperature=0.0):
        if self.stop_after is not None and len(self.asked) == self.stop_after:
            raise KeyboardInterrupt
        self.asked.append(messages[-1]["content"])
        return "answer to " + messages[-1]["content"]

    def chat_many(self, conversations, max_tokens=256, temperature=0.0):
        return [self.chat(c, max_tokens, temperature) for c in conversations]


def _ids(path):
    """How often each prompt id has an answer in the file (a torn line is no answer)."""
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return Counter(e["id"] for e in entries if "answer" in e)


def test_bad_prompt_lines_are_named_with_file_line_and_field(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": ""}\nnot json\n{"messages": [{"role": "bot", "content": "x"}]}\n'
                    '{"text": "no prompt"}\n')
    with pytest.raises(DataError) as e:
        read_prompts(path)
    message = str(e.value)
    assert "4 bad prompt line(s)" in message
    for line, field in ((2, "prompt"), (3, "invalid JSON"), (4, "messages[0]"), (5, "missing field `messages` or `prompt`")):
        assert f"{path}:{line}: {field}" in message


def test_references_and_labels_come_from_the_lines_and_the_split_is_stratified(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "ab"[i % 2]}],
             "label": "ab"[i % 2]} for i in range(20)]
    prompts = read_prompts(write_jsonl(tmp_path / "p.jsonl", rows))
    assert prompts[1].messages == [{"role": "user", "content": "q1"}] and prompts[1].reference == "b"
    train, held = split_held_out(prompts, 4)
    assert len(held) == 4 and Counter(p.label for p in held) == {"a": 2, "b": 2}
    assert {p.id for p in train}.isdisjoint(p.id for p in held)
    assert split_held_out(prompts, 4) == (train, held)  # seeded


def test_a_killed_run_resumed_asks_only_the_rest_and_keeps_each_answer_once(tmp_path):
    prompts = read_prompts(write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}"} for i in range(10)]))
    answers = tmp_path / "answers.jsonl"
    first = Scripted(stop_after=4)
    with pytest.raises(KeyboardInterrupt):
        ask_teacher(first, prompts, answers, log=lambda m: None)
    assert first.asked == ["q0", "q1", "q2", "q3"] and sum(_ids(answers).values()) == 4  # kept as they came
    with open(answers, "a") as f:
        f.write('{"id": "torn')  # the line a kill can leave half written
    second = Scripted()
    kept = ask_teacher(second, prompts, answers, log=lambda m: None)
    assert second.asked == [f"q{i}" for i in range(4, 10)]
    assert _ids(answers) == Counter({p.id: 1 for p in prompts}) and len(kept) == 10
    assert ask_teacher(Scripted(), prompts, answers, log=lambda m: None) == kept  # nothing left to ask


@pytest.fixture
def endpoint():
    """(base_url, script, seen): each chat request pops (status, body, headers) from ``script``."""
    script: list = []
    seen: list = []

    def respond(body, headers):
        seen.append(body["messages"][-1]["content"])
        status, extra = script.pop(0) if script else (200, {})
        answer = ({"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "A:" + seen[-1]}}]}
            if status == 200 else {"error": {"message": f"status {status}", "type": "x", "param": None, "code": None}})
        return status, answer, extra

    with fake_endpoint(respond) as url:
        yield url, script, seen


def test_a_429_with_retry_after_is_waited_out_and_nothing_is_asked_twice(tmp_path, endpoint):
    url, script, seen = endpoint
    script += [(200, {}), (429, {"retry-after": "0.1"}), (200, {})]
    prompts = read_prompts(write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}"} for i in range(4)]))
    logged: list[str] = []
    kept = ask_teacher(RemoteChat("teacher", url, max_retries=2, log=logged.append), prompts,
                       tmp_path / "answers.jsonl", log=logged.append)
    assert seen == ["q0", "q1", "q1", "q2", "q3"]  # only the rate-limited request was sent again
    assert [kept[p.id]["answer"] for p in prompts] == [f"A:q{i}" for i in range(4)]
    assert any("rate limited (429); retrying in 0.1 s" in m for m in logged)
    assert _ids(tmp_path / "answers.jsonl") == Counter({p.id: 1 for p in prompts})


def test_a_refused_key_stops_at_once_and_says_which_variable(tmp_path, endpoint, monkeypatch):
    url, script, seen = endpoint
    monkeypatch.setenv("TEACHER_KEY", "sk-wrong")
    script += [(401, {})]
    prompts = read_prompts(write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}"} for i in range(3)]))
    with pytest.raises(RemoteError, match=r"rerun with --resume.*refused the key \(from \$TEACHER_KEY\)"):
        ask_teacher(RemoteChat("teacher", url, "TEACHER_KEY"), prompts, tmp_path / "answers.jsonl", log=lambda m: None)
    assert seen == ["q0"]
    failure = json.loads((tmp_path / "answers.jsonl").read_text())
    assert "refused the key" in failure["error"] and "answer" not in failure  # recorded, not kept


def test_an_unreachable_teacher_is_a_clear_error_before_anything_is_trained(tmp_path, workspace, monkeypatch):
    monkeypatch.setattr("tunesmith.models.remote._retry_after", lambda e, attempt: 0.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}"} for i in range(5)])
    with pytest.raises(RemoteError, match=f"cannot reach http://127.0.0.1:{port}/v1"):
        distill(prompts, Teacher("m", f"http://127.0.0.1:{port}/v1"), tmp_path / "out", workspace,
                Options(held_out=1), log=lambda m: None)
    assert not workspace.runs_dir.exists()
    with pytest.raises(TunesmithError, match="--resume continues it"):
        distill(prompts, Teacher("m", f"http://127.0.0.1:{port}/v1"), tmp_path / "out", workspace,
                Options(held_out=1), log=lambda m: None)


class Echo(Scripted):
    """A teacher that answers the colour questions of ``chat_records`` with their references, and one with nothing."""

    def chat(self, messages, max_tokens=256, temperature=0.0):
        self.asked.append(messages[-1]["content"])
        return "" if messages[-1]["content"].endswith("item 0?") else self.answers[messages[-1]["content"]]


def test_end_to_end_a_tiny_student_learns_from_a_local_teacher(tmp_path, workspace, tiny_model_dir, monkeypatch):
    records = chat_records(24)
    prompts = write_jsonl(tmp_path / "p.jsonl", records)
    teacher = Echo()
    teacher.answers = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in records}
    monkeypatch.setattr("tunesmith.distill.distill.chat_client",
                        lambda model, *a, **k: teacher if model == "teacher" else chat_client(model, *a, **k))
    report = distill(prompts, Teacher("teacher"), tmp_path / "out", workspace,
                     Options(student=str(tiny_model_dir), held_out=4, max_tokens=8,
                             overrides=("training.max_steps=2", "training.batch_size=4", "tracking.report_to=none")),
                     log=lambda m: None)
    assert report["held_out_prompts"] == 4 and report["train_prompts"] == 20 and report["answers"] == 24
    assert len(teacher.asked) == 24
    cleaning = report["cleaning"]
    assert cleaning["input_records"] == 20 and cleaning["kept"] + cleaning["removed"] == 20
    held_out_ids = {e["id"] for e in report["examples"]}
    if not any(e["prompt"].endswith("item 0?") for e in report["examples"]):  # the empty answer was a training one
        assert cleaning["removed_by_reason"].get("invalid: empty_content") == 1
    assert report["metrics"]["teacher"]["task_exact_match"] == pytest.approx(
        sum(e["teacher"] == e["reference"] for e in report["examples"]) / len(held_out_ids))
    for side in ("student_before", "student_after"):
        assert 0 <= report["metrics"][side]["agreement_rouge_l"] <= 1
        assert "task_exact_match" in report["metrics"][side]
    assert (tmp_path / "out" / "distill.md").read_text().startswith("# Distillation of")
    assert json.loads((tmp_path / "out" / "distill.json").read_text())["run"] == report["run"]


@pytest.mark.slow
def test_tunesmith_serve_in_process_as_the_teacher(tmp_path, tmp_path_factory, tiny_model_dir):
    from tests.server.test_openai_sdk import install_model, served
    from tunesmith.web.app import ServerSettings, create_app
    from tunesmith.workspace import Workspace

    home = tmp_path_factory.mktemp("teacher-home")
    install_model(home, tiny_model_dir)
    app = create_app(Workspace(home), ServerSettings(require_keys=False))
    prompts = read_prompts(write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}"} for i in range(3)]))
    with served(app) as port:
        kept = ask_teacher(RemoteChat("tiny-chat", f"http://127.0.0.1:{port}/v1"), prompts, tmp_path / "a.jsonl",
                           max_tokens=4, log=lambda m: None)
        with pytest.raises(RemoteError, match="has no model 'no-such-model'"):
            ask_teacher(RemoteChat("no-such-model", f"http://127.0.0.1:{port}/v1"), prompts, tmp_path / "b.jsonl",
                        log=lambda m: None)
    assert set(kept) == {p.id for p in prompts} and all(isinstance(e["answer"], str) for e in kept.values())
