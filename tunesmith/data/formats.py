"""The dataset formats tunesmith reads, in TRL's vocabulary, and how to tell them apart.

| format              | fields                                          | used by        |
|---------------------|-------------------------------------------------|----------------|
| `chat`              | `messages` (OpenAI: role, content, weight?)     | sft            |
| `prompt_completion` | `prompt`, `completion`                          | sft            |
| `instruction`       | `instruction`, `input`?, `output`               | sft            |
| `classification`    | `text`, `label` (CSV or JSONL)                  | classify       |
| `preference`        | `prompt`, `chosen`, `rejected` (or OpenAI's     | dpo            |
|                     | `input.messages`, `preferred_output`,           |                |
|                     | `non_preferred_output`)                         |                |

Every supervised format converts to one canonical record: a list of chat messages
(``to_messages``), so the trainer and the evaluator only ever see conversations.
"""
from __future__ import annotations

from enum import Enum
from typing import Any


class Format(str, Enum):
    CHAT = "chat"
    PROMPT_COMPLETION = "prompt_completion"
    INSTRUCTION = "instruction"
    CLASSIFICATION = "classification"
    PREFERENCE = "preference"


SFT_FORMATS = (Format.CHAT, Format.PROMPT_COMPLETION, Format.INSTRUCTION)

# The fields each format reads (the table above); anything else in a record is carried along.
FIELDS: dict[Format, tuple[str, ...]] = {
    Format.CHAT: ("messages",), Format.PROMPT_COMPLETION: ("prompt", "completion"),
    Format.INSTRUCTION: ("instruction", "input", "output"), Format.CLASSIFICATION: ("text", "label"),
    Format.PREFERENCE: ("prompt", "chosen", "rejected")}

# Checked in order: preference before prompt_completion (both have `prompt`).
_SIGNATURES: list[tuple[Format, frozenset[str]]] = [
    (Format.CHAT, frozenset({"messages"})),
    (Format.PREFERENCE, frozenset({"chosen", "rejected"})),
    (Format.PREFERENCE, frozenset({"preferred_output", "non_preferred_output"})),  # OpenAI's DPO lines
    (Format.PROMPT_COMPLETION, frozenset({"prompt", "completion"})),
    (Format.INSTRUCTION, frozenset({"instruction", "output"})),
    (Format.CLASSIFICATION, frozenset({"text", "label"})),
]


def detect_format(record: dict[str, Any]) -> Format | None:
    """The format whose signature fields the record has, or None.

    >>> detect_format({"messages": []}).value
    'chat'
    >>> detect_format({"prompt": "a", "chosen": "b", "rejected": "c"}).value
    'preference'
    >>> detect_format({"foo": 1}) is None
    True
    """
    keys = set(record)
    for fmt, signature in _SIGNATURES:
        if signature <= keys:
            return fmt
    return None


def to_messages(record: dict[str, Any], fmt: Format) -> list[dict[str, Any]]:
    """The conversation a supervised record stands for (validated records only).

    >>> to_messages({"prompt": "2+2?", "completion": "4"}, Format.PROMPT_COMPLETION)
    [{'role': 'user', 'content': '2+2?'}, {'role': 'assistant', 'content': '4'}]
    >>> to_messages({"instruction": "Add.", "input": "2 2", "output": "4"}, Format.INSTRUCTION)[0]["content"]
    'Add.\\n\\n2 2'
    """
    if fmt is Format.CHAT:
        return [dict(m) for m in record["messages"]]
    if fmt is Format.PROMPT_COMPLETION:
        return [
            {"role": "user", "content": record["prompt"]},
            {"role": "assistant", "content": record["completion"]},
        ]
    if fmt is Format.INSTRUCTION:
        extra = record.get("input") or ""
        prompt = record["instruction"] + (f"\n\n{extra}" if extra.strip() else "")
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]
    raise ValueError(f"{fmt.value} records are not conversations")


# Our names for the parts of a preference record in OpenAI's DPO shape, and theirs.
OPENAI_PREFERENCE_FIELDS = {"prompt": "input.messages", "chosen": "preferred_output",
                            "rejected": "non_preferred_output"}


def as_preference(record: dict[str, Any]) -> dict[str, Any]:
    """A preference record in our shape (``prompt``/``chosen``/``rejected``), from either shape.

    >>> as_preference({"input": {"messages": [{"role": "user", "content": "Hi"}]},
    ...                "preferred_output": [{"role": "assistant", "content": "Hello!"}],
    ...                "non_preferred_output": [{"role": "assistant", "content": "What?"}]})["rejected"]
    [{'role': 'assistant', 'content': 'What?'}]
    """
    if "preferred_output" not in record:
        return record
    source = record.get("input")
    messages = source.get("messages") if isinstance(source, dict) else None
    out = {k: v for k, v in record.items() if k not in ("input", "preferred_output", "non_preferred_output")}
    if messages is not None:
        out["prompt"] = messages
    for ours, theirs in (("chosen", "preferred_output"), ("rejected", "non_preferred_output")):
        if theirs in record:
            out[ours] = record[theirs]
    return out


def split_prompt_and_reference(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The conversation up to the last assistant turn, and that turn's text (for generation eval).

    >>> split_prompt_and_reference([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    ([{'role': 'user', 'content': 'q'}], 'a')
    """
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:last]]
    return prompt, messages[last]["content"]


def last_user_text(conversation: list[dict[str, Any]] | str) -> str:
    """What the user asked last: the text of the last user turn (a plain prompt as it is).

    >>> last_user_text([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
    ...                 {"role": "user", "content": [{"type": "text", "text": "c"}]}])
    'c'
    """
    if isinstance(conversation, str):
        return conversation
    for message in reversed(conversation):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""
