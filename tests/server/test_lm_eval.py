"""lm-evaluation-harness against the server: ``/v1/completions`` with ``echo`` and ``logprobs`` in
OpenAI's legacy shape (checked against the model's own scores), its bad inputs, and a tiny local
multiple-choice task run end to end by ``lm_eval`` (``local-completions``) whose accuracy is
tunesmith's own log-likelihood scoring of the same items."""
import json
import math

import pytest
from fastapi.testclient import TestClient

from tests.server.test_http import assert_openai_error
from tests.server.test_openai_sdk import home_with_model, served

COMPLETIONS = "/v1/completions"


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_model_dir):
    return home_with_model(tmp_path_factory, tiny_model_dir, "lm-eval-home")


@pytest.fixture(scope="module")
def app(home):
    from tunesmith.web.app import ServerSettings, create_app

    return create_app(home, ServerSettings(require_keys=False))


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def loaded(home):
    from tunesmith.models import engine

    return engine.load("tiny-chat", home)


def test_echo_with_max_tokens_0_scores_the_prompt_as_the_model_does(client, loaded):
    prompt = "Item 2 is blue"
    response = client.post(COMPLETIONS, json={"model": "tiny-chat", "prompt": prompt, "echo": True, "max_tokens": 0,
                                              "logprobs": 2})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["text"] == prompt
    logprobs = choice["logprobs"]
    ids = loaded.tokenizer(prompt)["input_ids"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) == len(ids)
    assert "".join(logprobs["tokens"]) == prompt
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert logprobs["text_offset"] == [len("".join(logprobs["tokens"][:i])) for i in range(len(ids))]
    for token, value, top in zip(logprobs["tokens"][1:], logprobs["token_logprobs"][1:], logprobs["top_logprobs"][1:]):
        assert value < 0 and token in top and top[token] == value and 1 <= len(top) <= 3
        assert sorted(top.values(), reverse=True)[0] >= value
    # The same tokens scored by the path preference evaluation uses (summed, all but the first).
    from tunesmith.models import engine

    [(total, count)] = engine.sequence_logprobs(loaded, [{"input_ids": ids, "labels": [-100] + ids[1:]}])
    assert count == len(ids) - 1
    assert math.isclose(sum(logprobs["token_logprobs"][1:]), total, rel_tol=1e-4, abs_tol=1e-4)


def test_token_id_prompts_with_one_generated_token_as_lm_eval_asks(client, loaded):
    """lm-eval's loglikelihood request: token ids, echo, max_tokens 1, logprobs 1, temperature 0."""
    prompts = [loaded.tokenizer("Item 1 is")["input_ids"], loaded.tokenizer("Which colour")["input_ids"]]
    response = client.post(COMPLETIONS, json={"model": "tiny-chat", "prompt": prompts, "echo": True, "max_tokens": 1,
                                              "logprobs": 1, "temperature": 0, "seed": 1234})
    assert response.status_code == 200, response.text
    for ids, choice in zip(prompts, response.json()["choices"]):
        logprobs = choice["logprobs"]
        assert len(logprobs["token_logprobs"]) == len(ids) + 1  # the prompt, then the token generated
        last, top = logprobs["token_logprobs"][-1], logprobs["top_logprobs"][-1]
        assert last == max(top.values())  # greedy: the generated token is the likeliest


def test_generated_tokens_only_without_echo(client):
    response = client.post(COMPLETIONS, json={"model": "tiny-chat", "prompt": "Item 3 is", "max_tokens": 4,
                                              "temperature": 0, "logprobs": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    logprobs = body["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == body["usage"]["completion_tokens"]
    assert all(v is not None and len(top) == 1 for v, top in zip(logprobs["token_logprobs"], logprobs["top_logprobs"]))
    assert logprobs["text_offset"][0] == 0
    plain = client.post(COMPLETIONS, json={"model": "tiny-chat", "prompt": "Item 3 is", "max_tokens": 4,
                                           "temperature": 0})
    assert plain.json()["choices"][0]["logprobs"] is None
    assert plain.json()["choices"][0]["text"] == body["choices"][0]["text"]


@pytest.mark.parametrize("body,param", [
    ({"logprobs": 6}, "logprobs"),
    ({"logprobs": -1}, "logprobs"),
    ({"logprobs": True}, "logprobs"),
    ({"echo": "yes"}, "echo"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"prompt": [1, 10**9], "echo": True, "max_tokens": 0, "logprobs": 1}, "prompt"),
    ({"prompt": [1, -3]}, "prompt"),
    ({"prompt": [[]]}, "prompt"),
    ({"stream": True, "logprobs": 1}, "logprobs"),
    ({"stream": True, "echo": True}, "echo"),
])
def test_bad_logprobs_requests_are_a_400_naming_the_field(client, body, param):
    assert_openai_error(client.post(COMPLETIONS, json={"model": "tiny-chat", "prompt": "a", **body}), 400, param)


def test_chat_completions_refuse_echo_and_logprobs(client):
    """Chat has no echo (an unknown field is ignored, as OpenAI's SDKs send new ones) and no logprobs here."""
    ask = [{"role": "user", "content": "hi"}]
    assert_openai_error(client.post("/v1/chat/completions", json={"model": "tiny-chat", "messages": ask,
                                                                  "logprobs": True}), 400, "logprobs")
    echoed = client.post("/v1/chat/completions", json={"model": "tiny-chat", "messages": ask, "echo": True,
                                                       "max_tokens": 2})
    assert echoed.status_code == 200 and echoed.json()["choices"][0]["logprobs"] is None


def write_task(directory, items_path) -> str:
    (directory / "tiny_mc.yaml").write_text(f"""task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items_path}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
""")
    return "tiny_mc"


def test_lm_eval_local_completions_matches_tunesmiths_own_scoring(app, loaded, tiny_model_dir, tmp_path):
    lm_eval = pytest.importorskip("lm_eval")
    from tunesmith.eval import multiple_choice

    colours = ["red", "green", "blue", "amber", "violet"]
    items = [{"question": f"Which colour is item {i}?", "choices": colours, "answer": i % 5} for i in range(12)]
    items_path = tmp_path / "items.jsonl"
    items_path.write_text("".join(json.dumps(item) + "\n" for item in items))
    task = write_task(tmp_path, items_path)
    ours = multiple_choice.score(loaded, multiple_choice.read_items(items_path))
    with served(app) as port:
        from lm_eval.tasks import TaskManager

        results = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=f"base_url=http://127.0.0.1:{port}/v1/completions,model=tiny-chat,tokenizer={tiny_model_dir},"
                       "tokenizer_backend=huggingface,tokenized_requests=True,num_concurrent=1,max_retries=1",
            tasks=[task], task_manager=TaskManager(include_path=str(tmp_path)), log_samples=True)
    acc = results["results"][task]["acc,none"]
    assert acc == pytest.approx(ours["acc"])
    # Item by item: lm-eval's choice log-likelihoods are tunesmith's.
    for sample in results["samples"][task]:
        mine = ours["items"][sample["doc_id"]]["logprobs"]
        theirs = [float(r[0]) for r in sample["filtered_resps"]]
        # The same to 1e-3 in fp32; where the CPU has AVX-512-BF16 both run under bf16 autocast and
        # batch the choices differently (other padding, other reduction order): measured 9e-5 apart.
        assert theirs == pytest.approx(mine, rel=1e-3, abs=1e-3)


def test_tunesmith_eval_lm_eval_runs_a_local_task_on_a_model(home, loaded, tmp_path):
    """``tunesmith eval --lm-eval`` (eval/lm_eval.py): lm-eval's own ``hf`` model on the model
    tunesmith loads, the tokenizer from its local directory; the same accuracy as tunesmith's scoring."""
    pytest.importorskip("lm_eval")
    from tunesmith.errors import ConfigError
    from tunesmith.eval import multiple_choice
    from tunesmith.eval.lm_eval import run_lm_eval

    items = [{"question": f"Is {i} even?", "choices": ["yes", "no"], "answer": i % 2} for i in range(10)]
    items_path = tmp_path / "items.jsonl"
    items_path.write_text("".join(json.dumps(item) + "\n" for item in items))
    task = write_task(tmp_path, items_path)
    result = run_lm_eval("tiny-chat", home, task, include=tmp_path, limit=8, log=lambda m: None)
    ours = multiple_choice.score(loaded, multiple_choice.read_items(items_path)[:8])
    assert result["tasks"][task]["acc"] == pytest.approx(ours["acc"])
    with pytest.raises(ConfigError, match="unknown lm-eval task"):
        run_lm_eval("tiny-chat", home, "no_such_task_here", include=tmp_path)
    with pytest.raises(ConfigError, match="not a directory"):
        run_lm_eval("tiny-chat", home, task, include=tmp_path / "missing")
