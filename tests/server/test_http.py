"""The HTTP layer as a hostile-but-realistic client meets it: every model kind a request can
name (a pulled base model, a LoRA run, a full fine-tune, an alias), malformed bodies of every
kind (400 in OpenAI's shape naming the field, each in the request log), limits (body size,
context length), key roles, and a streaming client that disconnects."""
import json
import socket
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import chat_records, write_jsonl
from tests.server.test_openai_sdk import home_with_model, install_model, served

CHAT = "/v1/chat/completions"
ASK = [{"role": "user", "content": "Which colour is item 2?"}]


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_model_dir):
    return home_with_model(tmp_path_factory, tiny_model_dir, "http-home")


@pytest.fixture(scope="module")
def server(home):
    from tunesmith import api
    from tunesmith.web.app import ServerSettings, create_app

    admin, _ = api.create_api_key("admin", workspace=home, role="admin")
    user, _ = api.create_api_key("user", workspace=home)
    app = create_app(home, ServerSettings(max_body_bytes=256 * 1024, max_upload_bytes=64 * 1024))
    client = TestClient(app, raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {user}"
    return client, {"Authorization": f"Bearer {admin}"}, app


def logged(app, **where):
    from tunesmith.jobs.db import RequestRow

    with app.state.db.session() as session:
        rows = session.scalars(select(RequestRow).order_by(RequestRow.created_at)).all()
    return [r for r in rows if all(getattr(r, k) == v for k, v in where.items())]


def assert_openai_error(response, status, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


# ── every model kind through HTTP ─────────────────────────────────────────────────────────
def test_a_pulled_base_model_chats_completes_and_streams(server):
    client, _, _ = server
    chat = client.post(CHAT, json={"model": "tiny-chat", "messages": ASK, "max_tokens": 4, "temperature": 0})
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["role"] == "assistant"
    assert chat.json()["usage"]["completion_tokens"] <= 4
    completion = client.post("/v1/completions", json={"model": "tiny-chat", "prompt": "Item 2 is", "max_tokens": 3})
    assert completion.status_code == 200, completion.text
    with client.stream("POST", CHAT, json={"model": "tiny-chat", "messages": ASK, "max_tokens": 4, "stream": True,
                                           "stream_options": {"include_usage": True}}) as stream:
        lines = [line for line in stream.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    usage = json.loads(lines[-2][6:])
    assert usage["choices"] == [] and 0 <= usage["usage"]["completion_tokens"] <= 4


def test_a_prompt_list_answers_every_prompt(server):
    client, _, _ = server
    response = client.post("/v1/completions", json={"model": "tiny-chat", "prompt": ["a", "b", "c"], "max_tokens": 2,
                                                    "n": 2, "temperature": 0})
    assert response.status_code == 200, response.text
    assert [c["index"] for c in response.json()["choices"]] == list(range(6))
    too_many = client.post("/v1/completions", json={"model": "tiny-chat", "prompt": ["a"] * 20, "n": 4})
    assert_openai_error(too_many, 400)
    assert_openai_error(client.post("/v1/completions", json={"model": "tiny-chat", "prompt": "a", "suffix": "b"}),
                        400, "suffix")  # echo and logprobs are served now (tests/server/test_lm_eval.py)


# ── malformed requests: a 400 naming the field, and a row in the request log ──────────────
BAD_CHAT = [
    ({"model": 5, "messages": ASK}, "model"),
    ({"model": ["tiny-chat"], "messages": ASK}, "model"),
    ({"messages": ASK}, "model"),
    ({"model": "tiny-chat"}, "messages"),
    ({"model": "tiny-chat", "messages": "hello"}, "messages"),
    ({"model": "tiny-chat", "messages": []}, "messages"),
    ({"model": "tiny-chat", "messages": [5]}, "messages.0"),
    ({"model": "tiny-chat", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"model": "tiny-chat", "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"model": "tiny-chat", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages.0.content"),
    ({"model": "tiny-chat", "messages": ASK, "max_tokens": 0}, "max_tokens"),
    ({"model": "tiny-chat", "messages": ASK, "max_tokens": "ten"}, "max_tokens"),
    ({"model": "tiny-chat", "messages": ASK, "max_tokens": 2.5}, "max_tokens"),
    ({"model": "tiny-chat", "messages": ASK, "max_tokens": 10**9}, "max_tokens"),
    ({"model": "tiny-chat", "messages": ASK, "n": 0}, "n"),
    ({"model": "tiny-chat", "messages": ASK, "n": "2"}, "n"),
    ({"model": "tiny-chat", "messages": ASK, "temperature": "hot"}, "temperature"),
    ({"model": "tiny-chat", "messages": ASK, "temperature": 9}, "temperature"),
    ({"model": "tiny-chat", "messages": ASK, "temperature": True}, "temperature"),
    ({"model": "tiny-chat", "messages": ASK, "top_p": "0.5"}, "top_p"),
    ({"model": "tiny-chat", "messages": ASK, "top_p": 0}, "top_p"),
    ({"model": "tiny-chat", "messages": ASK, "stop": 5}, "stop"),
    ({"model": "tiny-chat", "messages": ASK, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "tiny-chat", "messages": ASK, "seed": "x"}, "seed"),
    ({"model": "tiny-chat", "messages": ASK, "stream": "yes"}, "stream"),
    ({"model": "tiny-chat", "messages": ASK, "tools": [{"type": "function"}]}, "tools"),
    ({"model": "tiny-chat", "messages": ASK, "stream": True, "n": 2}, "n"),
    ({"model": "tiny-chat", "messages": ASK, "stop": "x" * 1000}, "stop"),
    ({"model": "tiny-chat", "messages": ASK, "presence_penalty": 1.0}, "presence_penalty"),  # would be ignored
    ({"model": "tiny-chat", "messages": ASK, "logprobs": True}, "logprobs"),
]


@pytest.mark.parametrize("body,param", BAD_CHAT, ids=[f"{p}-{i}" for i, (_, p) in enumerate(BAD_CHAT)])
def test_a_malformed_chat_body_is_a_400_naming_the_field(server, body, param):
    client, _, app = server
    before = len(logged(app, status=400))
    assert_openai_error(client.post(CHAT, json=body), 400, param)
    assert len(logged(app, status=400)) == before + 1


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b'"text"', b"null", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000])
def test_a_body_that_is_not_a_json_object_is_a_400(server, raw):
    client, _, _ = server
    response = client.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert response.status_code in (400, 413), response.text
    assert_openai_error(response, response.status_code)


def test_infinite_numbers_in_json_are_refused_not_stored(server):
    client, _, _ = server
    raw = b'{"model": "tiny-chat", "training_file": "file-x", "hyperparameters": {"learning_rate_multiplier": 1e999}}'
    assert_openai_error(client.post("/v1/fine_tuning/jobs", content=raw, headers={"content-type": "application/json"}),
                        400, "hyperparameters.learning_rate_multiplier")
    chat = b'{"model": "tiny-chat", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}'
    assert_openai_error(client.post(CHAT, content=chat, headers={"content-type": "application/json"}), 400, "temperature")
    assert client.get("/v1/fine_tuning/jobs").status_code == 200


BAD_JOBS = [
    ({"model": 5, "training_file": "f"}, "model"),
    ({"model": "tiny-chat", "training_file": 5}, "training_file"),
    ({"model": "tiny-chat"}, "training_file"),
    ({"model": "tiny-chat", "training_file": "f", "seed": "x"}, "seed"),
    ({"model": "tiny-chat", "training_file": "f", "seed": -1}, "seed"),
    ({"model": "tiny-chat", "training_file": "f", "method": "dpo"}, "method"),
    ({"model": "tiny-chat", "training_file": "f", "method": {"type": "rlhf"}}, "method.type"),
    ({"model": "tiny-chat", "training_file": "f", "hyperparameters": "fast"}, "hyperparameters"),
    ({"model": "tiny-chat", "training_file": "f", "hyperparameters": {"n_epochs": "many"}}, "hyperparameters.n_epochs"),
    ({"model": "tiny-chat", "training_file": "f", "hyperparameters": {"n_epochs": True}}, "hyperparameters.n_epochs"),
    ({"model": "tiny-chat", "training_file": "f", "hyperparameters": {"learning_rate_multiplier": True}},
     "hyperparameters.learning_rate_multiplier"),
    ({"model": "tiny-chat", "training_file": "f", "hyperparameters": {"learning_rate_multiplier": "0.5"}},
     "hyperparameters.learning_rate_multiplier"),
    ({"model": "tiny-chat", "training_file": "f", "metadata": {"k": 5}}, "metadata.k"),
    ({"model": "tiny-chat", "training_file": "f", "suffix": "x" * 65}, "suffix"),
]


@pytest.mark.parametrize("body,param", BAD_JOBS, ids=[f"{p}-{i}" for i, (_, p) in enumerate(BAD_JOBS)])
def test_a_malformed_job_is_a_400_naming_the_field(server, body, param):
    client, _, _ = server
    assert_openai_error(client.post("/v1/fine_tuning/jobs", json=body), 400, param)


@pytest.mark.parametrize("path", ["/v1/files?limit=abc", "/v1/files?order=sideways", "/v1/fine_tuning/jobs?limit=0",
                                  "/v1/files/file-none/card?max_length=-5"])
def test_bad_query_parameters_are_400s_in_openai_shape(server, path):
    client, _, _ = server
    assert_openai_error(client.get(path), 400)


def test_unknown_routes_and_methods_answer_in_openai_shape(server):
    client, _, _ = server
    assert assert_openai_error(client.get("/v1/nothing-here"), 404)["code"] == "unknown_url"
    assert_openai_error(client.put(CHAT, json={}), 405)


# ── limits ────────────────────────────────────────────────────────────────────────────────
def test_a_prompt_over_the_context_is_a_400_before_any_compute(server):
    client, _, app = server
    long = [{"role": "user", "content": "word " * 2000}]  # the tiny model's context: 512 tokens
    started = time.perf_counter()
    error = assert_openai_error(client.post(CHAT, json={"model": "tiny-chat", "messages": long}), 400, "messages")
    assert error["code"] == "context_length_exceeded" and time.perf_counter() - started < 5
    asked = assert_openai_error(client.post(CHAT, json={"model": "tiny-chat", "messages": ASK, "max_tokens": 8000}),
                                400, "max_tokens")
    assert asked["code"] == "context_length_exceeded"
    assert logged(app, status=400, endpoint="chat", model="tiny-chat")


def test_a_body_over_the_limit_is_a_413_with_or_without_a_length(server):
    client, _, _ = server
    big = json.dumps({"model": "tiny-chat", "messages": [{"role": "user", "content": "x" * 300_000}]}).encode()
    assert_openai_error(client.post(CHAT, content=big, headers={"content-type": "application/json"}), 413)

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]
    assert_openai_error(client.post(CHAT, content=chunks(), headers={"content-type": "application/json"}), 413)


# ── uploads ───────────────────────────────────────────────────────────────────────────────
def multipart(name: str, content: bytes, purpose: str = "fine-tune", close: bool = True) -> tuple[bytes, dict]:
    boundary = "tunesmithboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/jsonl\r\n\r\n").encode() + content + b"\r\n"
    if close:
        body += f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def data_bytes(n=12) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in chat_records(n)).encode()


def test_a_truncated_upload_is_refused_and_leaves_nothing(server, home):
    client, _, _ = server
    before = set((home.home / "files").iterdir())
    body, headers = multipart("train.jsonl", data_bytes(), close=False)
    error = assert_openai_error(client.post("/v1/files", content=body, headers=headers), 400, "file")
    assert error["code"] == "incomplete_upload"
    assert set((home.home / "files").iterdir()) == before
    garbage = client.post("/v1/files", content=b"\x00garbage" * 100, headers=headers)
    assert_openai_error(garbage, 400)


def test_an_upload_over_the_limit_without_a_length_is_a_413_leaving_nothing(server, home):
    client, _, _ = server
    before = set((home.home / "files").iterdir())
    body, headers = multipart("big.jsonl", data_bytes(800))  # ~100 kB: over the 64 kB limit

    def chunks():  # no Content-Length: the size is only known as the bytes arrive
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]
    assert len(body) > 64 * 1024
    assert assert_openai_error(client.post("/v1/files", content=chunks(), headers=headers), 413)["code"] == "file_too_large"
    assert set((home.home / "files").iterdir()) == before


def test_a_long_hostile_file_name_is_stored_under_an_id_with_a_short_label(server):
    client, _, _ = server
    body, headers = multipart("../" * 10 + "x" * 5000 + ".jsonl", data_bytes())
    response = client.post("/v1/files", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert len(response.json()["filename"]) <= 255 and "/" not in response.json()["filename"]


def test_a_file_uploaded_for_another_purpose_does_not_train(server):
    client, _, _ = server
    body, headers = multipart("batch.jsonl", data_bytes(), purpose="batch")
    file_id = client.post("/v1/files", content=body, headers=headers).json()["id"]
    error = assert_openai_error(client.post("/v1/fine_tuning/jobs", json={"model": "tiny-chat", "training_file": file_id}),
                                400, "training_file")
    assert "purpose" in error["message"]
    assert_openai_error(client.post("/v1/fine_tuning/jobs", json={"model": "tiny-chat", "training_file": "file-nope"}),
                        400, "training_file")


# ── keys and roles ────────────────────────────────────────────────────────────────────────
def test_a_user_key_cannot_delete_base_models_keys_or_others_files(server):
    client, admin, _ = server
    assert_openai_error(client.delete("/v1/models/tiny-chat"), 403)
    assert client.get("/v1/models/tiny-chat").status_code == 200  # still there
    assert_openai_error(client.get("/v1/tunesmith/keys"), 403)
    body, headers = multipart("mine.jsonl", data_bytes())
    theirs = client.post("/v1/files", content=body, headers=headers | admin).json()["id"]
    assert_openai_error(client.delete(f"/v1/files/{theirs}"), 403)
    mine = client.post("/v1/files", content=body, headers=headers).json()["id"]
    assert client.delete(f"/v1/files/{mine}").json()["deleted"] is True
    created = client.post("/v1/tunesmith/keys", json={"name": "ci", "role": "user"}, headers=admin).json()
    assert created["role"] == "user" and created["secret"].startswith("ts-")
    assert client.delete(f"/v1/tunesmith/keys/{created['id']}", headers=admin).json()["deleted"] is True


def test_the_schema_needs_a_key_and_no_page_loads_from_a_cdn(server):
    client, _, _ = server
    assert client.get("/health", headers={"Authorization": ""}).json() == {"status": "ok"}
    assert client.get("/v1/tunesmith/status", headers={"Authorization": ""}).status_code == 401
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404
    assert client.get("/v1/openapi.json", headers={"Authorization": ""}).status_code == 401
    schema = client.get("/v1/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"]


def test_a_key_in_the_query_string_is_not_accepted(server):
    client, _, _ = server
    secret = client.headers["Authorization"].removeprefix("Bearer ")
    assert_openai_error(client.get(f"/v1/models?api_key={secret}", headers={"Authorization": ""}), 401)


# ── aliases and dependents ────────────────────────────────────────────────────────────────
def test_deleting_an_alias_deletes_the_alias_and_a_depended_on_model_is_a_409(tiny_model_dir, tmp_path):
    import tunesmith
    from tests.training.test_sft import tiny_config
    from tunesmith.serving.aliases import read_aliases, set_alias
    from tunesmith.web.app import ServerSettings, create_app
    from tunesmith.workspace import Workspace

    home = Workspace(tmp_path / "home")
    install_model(home.home, tiny_model_dir)

    data = write_jsonl(tmp_path / "chat.jsonl", chat_records(20))
    run = tunesmith.train(tiny_config(home.home / "models" / "tiny-chat", data, "training.max_steps=2"),
                          workspace=home).run
    set_alias(home, "support-bot", run.id)
    client = TestClient(create_app(home, ServerSettings(require_keys=False)), raise_server_exceptions=False)
    assert client.post(CHAT, json={"model": "support-bot", "messages": ASK, "max_tokens": 2}).status_code == 200
    error = assert_openai_error(client.delete(f"/v1/models/{run.id}"), 409)
    assert "support-bot" in error["message"]
    blocked = assert_openai_error(client.delete("/v1/models/tiny-chat"), 409)
    assert run.id in blocked["message"] or "support-bot" in blocked["message"]
    assert client.delete("/v1/models/support-bot").json()["deleted"] is True
    assert "support-bot" not in read_aliases(home) and run.final_dir.exists()  # the model is untouched
    assert client.post(CHAT, json={"model": run.id, "messages": ASK, "max_tokens": 2}).status_code == 200
    assert client.delete(f"/v1/models/{run.id}").json()["deleted"] is True
    assert_openai_error(client.post(CHAT, json={"model": run.id, "messages": ASK}), 404, "model")


# ── a streaming client that disconnects ───────────────────────────────────────────────────
@pytest.fixture
def live(home):
    from tunesmith.web.app import ServerSettings, create_app

    app = create_app(home, ServerSettings(require_keys=False, max_waiting=2))
    with served(app) as port:
        yield app, port


@pytest.fixture
def slow_generation(monkeypatch):
    """Every generated token takes 20 ms and none ends the answer early (min_new_tokens): a
    400-token answer runs 8 s, unless a disconnect stops it. Returns the token counter."""
    from transformers import LogitsProcessor, LogitsProcessorList

    from tunesmith.models import generation
    produced = {"tokens": 0}

    class Slow(LogitsProcessor):
        def __call__(self, input_ids, scores):
            produced["tokens"] += 1
            time.sleep(0.02)
            return scores

    original = generation._generation_kwargs

    def slowed(tokenizer, params):
        return original(tokenizer, params) | {"min_new_tokens": params.max_new_tokens,
                                              "logits_processor": LogitsProcessorList([Slow()])}
    monkeypatch.setattr(generation, "_generation_kwargs", slowed)
    return produced


def wait_until_still(counter: dict, key: str = "tokens", timeout: float = 5.0) -> int:
    """The counter once it has stopped moving for 0.5 s (generation over)."""
    deadline, last = time.time() + timeout, -1
    while counter[key] != last:
        assert time.time() < deadline, "generation went on"
        last = counter[key]
        time.sleep(0.5)
    return last


def raw_request(port: int, body: dict) -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock


def test_a_stream_that_disconnects_stops_generating_and_frees_its_slot(live, slow_generation):
    import httpx

    app, port = live
    models = app.state.models
    for _ in range(3):  # more than max_waiting: a leaked slot would turn the last into a 429
        before = slow_generation["tokens"]
        sock = raw_request(port, {"model": "tiny-chat", "messages": ASK, "max_tokens": 400, "stream": True,
                                  "temperature": 1.0})
        received = b""
        while b"data:" not in received:
            received += sock.recv(4096)
        sock.close()
        deadline = time.time() + 3  # the answer would take 8 s
        while models.status()["admitted"] or models.status()["generating"]:
            assert time.time() < deadline, "the disconnected stream kept its slot or the model's lock"
            time.sleep(0.05)
        assert wait_until_still(slow_generation) - before < 150  # of 400
    started = time.perf_counter()
    answer = httpx.post(f"http://127.0.0.1:{port}{CHAT}", json={"model": "tiny-chat", "messages": ASK, "max_tokens": 2},
                        timeout=30)
    assert answer.status_code == 200 and time.perf_counter() - started < 10
    deadline = time.time() + 5
    while not logged(app, status=499, endpoint="chat"):
        assert time.time() < deadline, "the disconnect was not logged"
        time.sleep(0.1)


def test_a_non_streaming_client_that_disconnects_cancels_its_generation(live, slow_generation):
    app, port = live
    models = app.state.models
    sock = raw_request(port, {"model": "tiny-chat", "messages": ASK, "max_tokens": 400})
    time.sleep(1.0)
    sock.close()
    deadline = time.time() + 4  # the answer would take 8 s
    while models.status()["admitted"] or not logged(app, status=499, endpoint="chat"):
        assert time.time() < deadline, "the abandoned request was not cancelled"
        time.sleep(0.1)
    assert wait_until_still(slow_generation) < 200


# ── failures inside the server ────────────────────────────────────────────────────────────
def test_a_bug_is_a_500_in_openai_shape_that_shows_nothing_internal(server, monkeypatch):
    from tunesmith.jobs import fine_tuning as jobs
    client, _, app = server

    def broken(*args, **kwargs):
        raise RuntimeError("/root/.cache/tunesmith/secret.db exploded")
    monkeypatch.setattr(jobs, "list_jobs", broken)
    error = assert_openai_error(client.get("/v1/fine_tuning/jobs"), 500)
    assert "secret" not in error["message"] and error["type"] == "server_error"
    assert logged(app, status=500, endpoint="fine_tuning")


@pytest.mark.parametrize("down", ["locked", "unavailable"])
def test_a_database_that_is_down_is_a_503_with_retry_after(server, monkeypatch, down):
    from sqlalchemy.exc import OperationalError

    from tunesmith.jobs import fine_tuning as jobs
    from tunesmith.jobs.db import DatabaseUnavailable

    client, _, _ = server

    def failing(*args, **kwargs):
        if down == "locked":
            raise OperationalError("select", {}, Exception("database is locked"))
        raise DatabaseUnavailable("the database did not answer after 5 tries")
    monkeypatch.setattr(jobs, "get_job", failing)
    response = client.get("/v1/fine_tuning/jobs/ftjob-x")
    assert assert_openai_error(response, 503)["code"] == "database_unavailable"
    assert response.headers["retry-after"]


def test_cors_is_off_by_default_and_never_answers_a_foreign_origin(home):
    from tunesmith.web.app import ServerSettings, create_app

    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    closed = TestClient(create_app(home, ServerSettings()), raise_server_exceptions=False)
    assert "access-control-allow-origin" not in closed.options(CHAT, headers=preflight).headers
    opened = TestClient(create_app(home, ServerSettings(cors_origins=("http://localhost:3000",))))
    assert "access-control-allow-origin" not in opened.options(CHAT, headers=preflight).headers
    allowed = opened.options(CHAT, headers=preflight | {"Origin": "http://localhost:3000"})
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
