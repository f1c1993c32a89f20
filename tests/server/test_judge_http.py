"""`tunesmith judge` pointed at an OpenAI-compatible endpoint: tunesmith's own server, in this
process, serving the tiny random model with keys required. The judge's key comes from the
environment variable named by ``key_env``; a wrong one is refused plainly, and a URL where
nothing listens is named after the retries."""
from __future__ import annotations

import pytest

from tests.conftest import write_jsonl
from tests.server.test_openai_sdk import free_port, install_model, served
from tunesmith import api
from tunesmith.models.remote import RemoteError

pytest.importorskip("openai")


@pytest.fixture
def answers(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "prompt": f"Summarise: item {i} is red.", "answer": f"Item {i} is red."}
                                          for i in range(3)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": i, "prompt": f"Summarise: item {i} is red.", "answer": "Blue."}
                                          for i in range(3)])
    return a, b


@pytest.fixture
def server(workspace, tiny_model_dir):
    from tunesmith.web.app import ServerSettings, create_app

    install_model(workspace.home, tiny_model_dir)
    secret, _ = api.create_api_key("judge", workspace=workspace)
    with served(create_app(workspace, ServerSettings())) as port:
        yield f"http://127.0.0.1:{port}/v1", secret


def test_the_judge_at_tunesmith_serve_answers_every_pair_twice(server, answers, workspace, tmp_path, monkeypatch):
    url, secret = server
    monkeypatch.setenv("JUDGE_KEY", secret)
    human = write_jsonl(tmp_path / "human.jsonl", [{"id": i, "preference": "A"} for i in range(3)])
    report = api.judge(*answers, "tiny-chat", base_url=url, key_env="JUDGE_KEY", human=human, out=tmp_path / "out",
                       workspace=workspace, log=lambda m: None)
    assert report["judge"] == "tiny-chat" and report["summary"]["pairs"] == 3
    assert all(len(e["replies"]) == 2 for e in report["examples"])  # every pair asked as (A, B) and (B, A)
    s = report["summary"]
    assert s["judged"] + s["unparsed"] == 3  # the random model's replies: parsed or counted, never a crash
    assert (tmp_path / "out" / "judge.md").is_file()


def test_a_refused_key_says_which_variable_it_came_from(server, answers, workspace, monkeypatch):
    url, _ = server
    monkeypatch.setenv("JUDGE_KEY", "sk-wrong")
    with pytest.raises(RemoteError, match=r"refused the key \(from \$JUDGE_KEY\)"):
        api.judge(*answers, "tiny-chat", base_url=url, key_env="JUDGE_KEY", out=None, workspace=workspace,
                  log=lambda m: None)


def test_an_unknown_judge_model_at_the_endpoint_is_named(server, answers, workspace, monkeypatch):
    url, secret = server
    monkeypatch.setenv("JUDGE_KEY", secret)
    with pytest.raises(RemoteError, match="has no model 'no-such-judge'"):
        api.judge(*answers, "no-such-judge", base_url=url, key_env="JUDGE_KEY", workspace=workspace, log=lambda m: None)


def test_an_unreachable_judge_endpoint_is_named_after_the_retries(answers, workspace, monkeypatch):
    monkeypatch.setattr("tunesmith.models.remote._retry_after", lambda error, attempt: 0.0)
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(RemoteError, match=f"cannot reach {url}"):
        api.judge(*answers, "tiny-chat", base_url=url, workspace=workspace, log=lambda m: None)
