"""The chat client over an OpenAI-compatible endpoint: retries what may pass (429 with
Retry-After, 5xx), fails at once with a plain message on what will not (refused key, unknown
model, nothing listening). The endpoint is a stdlib HTTP server answering from a script."""
from __future__ import annotations

import socket

import pytest

from tests.conftest import fake_endpoint
from tunesmith.models.remote import RemoteChat, RemoteError, _Pace


def _reply(text: str) -> dict:
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}


@pytest.fixture
def endpoint():
    """(base_url, script, seen): each request pops (status, body, headers) from ``script``."""
    script: list[tuple[int, dict, dict]] = []
    seen: list[dict] = []

    def respond(body, headers):
        seen.append({"body": body, "auth": headers.get("authorization")})
        return script.pop(0)

    with fake_endpoint(respond) as url:
        yield url, script, seen


def _error(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}


def test_a_429_is_retried_after_what_the_server_asks_and_answered_once(endpoint, monkeypatch):
    url, script, seen = endpoint
    monkeypatch.setenv("TEACHER_KEY", "sk-test")
    script += [(429, _error("slow down"), {"retry-after": "0.2"}), (503, _error("busy"), {}), (200, _reply(" hi "), {})]
    logged: list[str] = []
    client = RemoteChat("m", url, "TEACHER_KEY", max_retries=3, log=logged.append)
    assert client.chat([{"role": "user", "content": "hello"}], max_tokens=5) == "hi"
    assert len(seen) == 3 and all(s["auth"] == "Bearer sk-test" for s in seen)
    assert seen[0]["body"]["messages"] == [{"role": "user", "content": "hello"}] and seen[0]["body"]["max_tokens"] == 5
    assert "rate limited (429); retrying in 0.2 s" in logged[0] and "server error (503)" in logged[1]


def test_still_failing_after_the_retries_says_so(endpoint, monkeypatch):
    url, script, _ = endpoint
    monkeypatch.setattr("tunesmith.models.remote._retry_after", lambda e, attempt: 0.0)
    script += [(429, _error("quota"), {})] * 3
    with pytest.raises(RemoteError, match="still failing after 3 attempts: rate limited"):
        RemoteChat("m", url, max_retries=2).chat([{"role": "user", "content": "x"}])


@pytest.mark.parametrize("status, message", [(401, "refused the key \\(from \\$NO_SUCH_KEY, which is not set\\): bad key"),
                                             (404, "has no model 'm'"), (400, "rejected the request")])
def test_what_retrying_cannot_fix_fails_at_once(endpoint, status, message, monkeypatch):
    url, script, seen = endpoint
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    script += [(status, _error("bad key"), {})]
    with pytest.raises(RemoteError, match=message):
        RemoteChat("m", url, "NO_SUCH_KEY").chat([{"role": "user", "content": "x"}])
    assert len(seen) == 1


def test_nothing_listening_is_named_with_the_url(monkeypatch):
    monkeypatch.setattr("tunesmith.models.remote._retry_after", lambda e, attempt: 0.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RemoteError, match=f"cannot reach http://127.0.0.1:{port}/v1 .* after 2 attempts"):
        RemoteChat("m", f"http://127.0.0.1:{port}/v1", max_retries=1, timeout=2).chat([{"role": "user", "content": "x"}])


def test_the_pace_spaces_request_starts(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("tunesmith.models.remote.time.sleep", slept.append)
    pace = _Pace(per_minute=120)  # one every 0.5 s
    for _ in range(3):
        pace.wait()
    assert slept[0] == 0 and 0.4 < slept[1] <= 0.5 and 0.9 < slept[2] <= 1.0
