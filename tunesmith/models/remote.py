"""Asking a chat model for answers, wherever it runs: one client for the judge, the teacher of a
distillation, and anything else that needs a model's replies to conversations.

``chat_client(model, workspace)`` loads a model tunesmith knows (a run, a pulled model, a model
directory: ``models/engine.py``); ``chat_client(model, workspace, base_url=URL)`` talks to any
OpenAI-compatible endpoint — OpenAI itself, ``tunesmith serve``, vLLM, llama.cpp's server —
through the official ``openai`` SDK.

Why the retries are ours and not the SDK's (``max_retries=0`` below): the SDK retries 429s and
5xx itself, but without a ceiling on the wait a ``Retry-After`` may ask for, without telling the
caller that it is waiting, and without a rate limit of our own across calls. Here every retry is
said (``log``), ``Retry-After`` is honoured up to ``MAX_WAIT`` seconds, and ``requests_per_minute``
spaces the requests so that a teacher's quota is not hit in the first place.

Failures that retrying cannot fix end at once with a ``RemoteError`` that says what to do: the
endpoint cannot be reached, the key was refused (naming the environment variable it came from),
the endpoint has no such model.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from tunesmith.errors import TunesmithError
from tunesmith.workspace import Workspace

Messages = list[dict[str, str]]
Log = Callable[[str], None]

MAX_WAIT = 120.0  # seconds: the longest Retry-After honoured; a longer one is waited as this


class RemoteError(TunesmithError):
    """An OpenAI-compatible endpoint could not answer: unreachable, key refused, unknown model,
    or still failing after the retries."""

    exit_code = 7


class ChatClient(Protocol):
    name: str

    def chat(self, messages: Messages, max_tokens: int = 256, temperature: float = 0.0) -> str: ...

    def chat_many(self, conversations: Sequence[Messages], max_tokens: int = 256,
                  temperature: float = 0.0) -> list[str]: ...


def chat_client(model: str, workspace: Workspace, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                requests_per_minute: float | None = None, max_retries: int = 5, timeout: float = 60.0,
                log: Log | None = None) -> ChatClient:
    """A client for ``model``: over HTTP when ``base_url`` is given, else loaded here."""
    if base_url:
        return RemoteChat(model, base_url, api_key_env, requests_per_minute, max_retries, timeout, log)
    return LocalChat(model, workspace)


# ── a model loaded here ─────────────────────────────────────────────────────────────────────
class LocalChat:
    """A run or model loaded in this process (adapters merged: faster decoding); greedy by default."""

    def __init__(self, model: str, workspace: Workspace, batch_size: int = 8):
        from tunesmith.models.engine import load

        self.name, self.batch_size = model, batch_size
        self.loaded = load(model, workspace, merge=True)

    def chat(self, messages: Messages, max_tokens: int = 256, temperature: float = 0.0) -> str:
        return self.chat_many([messages], max_tokens, temperature)[0]

    def chat_many(self, conversations: Sequence[Messages], max_tokens: int = 256,
                  temperature: float = 0.0) -> list[str]:
        from tunesmith.models.engine import generate

        return generate(self.loaded, list(conversations), max_tokens, self.batch_size, temperature)


# ── an OpenAI-compatible endpoint ───────────────────────────────────────────────────────────
@dataclass
class _Pace:
    """At most ``per_minute`` request starts per minute, shared by the threads of one client."""

    per_minute: float | None
    _next: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self) -> None:
        if not self.per_minute:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + 60.0 / self.per_minute
        time.sleep(max(0.0, start - now))


class RemoteChat:
    """Chat completions from ``base_url`` (``…/v1``) for ``model``, the key read from ``api_key_env``."""

    def __init__(self, model: str, base_url: str, api_key_env: str = "OPENAI_API_KEY",
                 requests_per_minute: float | None = None, max_retries: int = 5, timeout: float = 60.0,
                 log: Log | None = None):
        import openai

        self.name, self.base_url, self.api_key_env = model, base_url.rstrip("/"), api_key_env
        self.max_retries, self.log = max_retries, log or (lambda message: None)
        self._pace = _Pace(requests_per_minute)
        # A server without keys (tunesmith serve --insecure-no-keys, a local vLLM) takes any key;
        # the SDK refuses to start without one.
        key = os.environ.get(api_key_env) or "no-key"
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=timeout)

    def chat(self, messages: Messages, max_tokens: int = 256, temperature: float = 0.0) -> str:
        response = self._call(lambda: self._client.chat.completions.create(
            model=self.name, messages=messages, max_tokens=max_tokens, temperature=temperature))
        return (response.choices[0].message.content or "").strip()

    def chat_many(self, conversations: Sequence[Messages], max_tokens: int = 256,
                  temperature: float = 0.0) -> list[str]:
        return [self.chat(messages, max_tokens, temperature) for messages in conversations]

    def _call(self, request: Callable[[], Any]) -> Any:
        """``request()``, paced, retried on what may pass (429, 5xx, timeouts, a dropped
        connection), failed at once with a plain message on what will not."""
        import openai

        for attempt in range(self.max_retries + 1):
            self._pace.wait()
            try:
                return request()
            except openai.AuthenticationError as e:
                raise RemoteError(f"{self.base_url} refused the key (from ${self.api_key_env}"
                                  f"{'' if os.environ.get(self.api_key_env) else ', which is not set'}): "
                                  f"{_message(e)}") from None
            except openai.PermissionDeniedError as e:
                raise RemoteError(f"{self.base_url}: the key in ${self.api_key_env} may not use {self.name}: "
                                  f"{_message(e)}") from None
            except openai.NotFoundError as e:
                raise RemoteError(f"{self.base_url} has no model {self.name!r} (or no chat completions route): "
                                  f"{_message(e)}") from None
            except openai.BadRequestError as e:
                raise RemoteError(f"{self.base_url} rejected the request for {self.name}: {_message(e)}") from None
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as e:
                # APITimeoutError is an APIConnectionError
                if attempt == self.max_retries:
                    raise RemoteError(_final(e, self.base_url, self.max_retries)) from None
                wait = _retry_after(e, attempt)
                self.log(f"{self.base_url}: {_reason(e)}; retrying in {wait:.1f} s "
                         f"(attempt {attempt + 2} of {self.max_retries + 1})")
                time.sleep(wait)
            except openai.APIStatusError as e:
                raise RemoteError(f"{self.base_url} answered {e.status_code} for {self.name}: {_message(e)}") from None
        raise AssertionError("unreachable")


def _retry_after(error: Exception, attempt: int) -> float:
    """The server's ``Retry-After`` (seconds) when it sent one, else exponential backoff: 1, 2, 4 … s."""
    response = getattr(error, "response", None)
    header = response.headers.get("retry-after") if response is not None else None
    try:
        return min(MAX_WAIT, max(0.0, float(header)))
    except (TypeError, ValueError):
        return min(MAX_WAIT, 2.0 ** attempt)


def _reason(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    if status == 429:
        return "rate limited (429)"
    if status:
        return f"server error ({status})"
    return f"no answer ({type(error).__name__})"


def _final(error: Exception, base_url: str, retries: int) -> str:
    import openai

    if isinstance(error, openai.APIConnectionError):
        return (f"cannot reach {base_url} ({type(error).__name__}: {error}) after {retries + 1} attempts; "
                "is the server running, and is the URL its …/v1 base?")
    return f"{base_url} still failing after {retries + 1} attempts: {_reason(error)}: {_message(error)}"


def _message(error: Exception) -> str:
    """The server's own message (OpenAI's error shape), not the SDK's wrapper text."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(error)
