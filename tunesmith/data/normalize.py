"""Normalising records: text to NFC with unified line endings and trimmed whitespace, role
aliases mapped (only when asked), and the text fields of each format located.

Pure functions over parsed records.
"""
from __future__ import annotations

import unicodedata
from typing import Any, Callable, Iterator

from tunesmith.data.formats import Format

ROLE_ALIASES = {
    "human": "user", "customer": "user", "prompter": "user",
    "gpt": "assistant", "bot": "assistant", "ai": "assistant", "model": "assistant", "chatbot": "assistant",
    "sys": "system",
}
TEXT_FIELDS = {
    Format.PROMPT_COMPLETION: ("prompt", "completion"),
    Format.INSTRUCTION: ("instruction", "input", "output"),
    Format.CLASSIFICATION: ("text",),
}


def normalize_text(text: str) -> str:
    r"""NFC, ``\r\n``/``\r`` → ``\n``, no BOM, trimmed.

    >>> normalize_text("\ufeff  Cafe\u0301\r\nok  ")
    'Café\nok'
    """
    text = unicodedata.normalize("NFC", text.replace("\ufeff", ""))
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def text_slots(record: dict[str, Any], fmt: Format) -> Iterator[tuple[dict | list, Any, str]]:
    """(container, key, role) for every string field that carries content; role is '' outside chat."""
    if fmt is Format.CHAT:
        for message in record.get("messages") or []:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                yield message, "content", str(message.get("role", ""))
        return
    if fmt is Format.PREFERENCE:
        for key in ("prompt", "chosen", "rejected"):
            value = record.get(key)
            if isinstance(value, str):
                yield record, key, ""
            elif isinstance(value, list):
                for message in value:
                    if isinstance(message, dict) and isinstance(message.get("content"), str):
                        yield message, "content", str(message.get("role", ""))
        return
    for key in TEXT_FIELDS[fmt]:
        if isinstance(record.get(key), str):
            yield record, key, ""


def map_texts(record: dict[str, Any], fmt: Format, change: Callable[[str], str]) -> bool:
    """Apply ``change`` to every content field in place; True when anything changed."""
    changed = False
    for container, key, _ in text_slots(record, fmt):
        new = change(container[key])
        if new != container[key]:
            container[key] = new
            changed = True
    return changed


def fix_roles(record: dict[str, Any]) -> list[str]:
    """Map role aliases (``human`` → ``user``, ``gpt`` → ``assistant`` ...) in place; the mappings made."""
    made = []
    for message in record.get("messages") or []:
        if isinstance(message, dict) and isinstance(message.get("role"), str):
            alias = message["role"].strip().lower()
            if alias in ROLE_ALIASES:
                made.append(f"{message['role']}→{ROLE_ALIASES[alias]}")
                message["role"] = ROLE_ALIASES[alias]
    return made


def dedup_text(record: dict[str, Any], fmt: Format) -> str:
    """The content that makes a record what it is: system prompts are left out, since many
    datasets share one across every record."""
    return "\n".join(c[k] for c, k, role in text_slots(record, fmt) if role != "system")
