"""An Ollama model: the GGUF plus a ``Modelfile`` whose TEMPLATE, SYSTEM and stop parameters are
the ones the model was trained with.

Ollama does not run the Jinja chat template shipped in the GGUF; it renders its own Go template.
Writing that template by hand per model family is where exports go wrong (ollama #8982). Instead
the run's own Jinja template is *measured*: rendered with marker contents, it gives each role's
text before and after the content, what comes before a conversation without a system message
(SmolLM2's default system prompt, or a Llama 3 ``<|begin_of_text|>``) and the generation prompt
(``ChatShape``). The Modelfile's template is written from that shape, and the same shape renders
every parity conversation in Python, which must equal the Jinja rendering character for character
— a template that cannot be expressed this way (a system message folded into the first user turn,
content-dependent branches) is refused, not approximated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from tunesmith.errors import ExportError
from tunesmith.models.chat import render

ROLES = ("system", "user", "assistant")
_MARK = {"system": "SYSTEMmark7f3a", "user": "USERmark91c2", "assistant": "ASSISTANTmark4d5e"}


@dataclass(frozen=True)
class ChatShape:
    parts: dict[str, tuple[str, str]]  # role → (text before its content, text after it)
    no_system_head: str                # before a conversation that starts without a system message
    generation: str                    # the generation prompt (the assistant's header)
    default_system: str | None         # the system prompt the template adds when there is none

    def render(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """What the Modelfile's template renders for ``messages`` (Ollama prepends SYSTEM itself)."""
        text = "" if messages and messages[0]["role"] == "system" else self.no_system_head
        for message in messages:
            before, after = self.parts[message["role"]]
            text += before + message["content"] + after
        return text + (self.generation if add_generation_prompt else "")

    def go_template(self) -> str:
        branches = "{{ else if ".join(f'eq $m.Role "{role}" }}}}{_go(b)}{{{{ $m.Content }}}}{_go(a)}'
                                      for role, (b, a) in self.parts.items())
        return ("{{ range $i, $m := .Messages }}"
                f'{{{{ if and (eq $i 0) (ne $m.Role "system") }}}}{_go(self.no_system_head)}{{{{ end }}}}'
                f"{{{{ if {branches}{{{{ end }}}}"
                "{{ end }}" + _go(self.generation))


def chat_shape(tokenizer) -> ChatShape:
    """Measure the tokenizer's chat template (see the module docstring)."""
    s, u, a = ({"role": r, "content": _MARK[r]} for r in ROLES)
    try:
        only_system = render(tokenizer, [s])
        with_user = render(tokenizer, [s, u])
        with_reply = render(tokenizer, [s, u, a])
        prompted = render(tokenizer, [s, u], add_generation_prompt=True)
        user_first = render(tokenizer, [u])
    except Exception as e:  # noqa: BLE001 — a template that refuses one of these conversations
        raise _inexpressible(f"it does not render a plain system/user/assistant conversation ({e})") from e
    for longer, shorter in ((with_user, only_system), (with_reply, with_user), (prompted, with_user)):
        if not longer.startswith(shorter):
            raise _inexpressible("a later turn changes how the earlier ones are rendered")
    user_block = with_user[len(only_system):]
    if not user_first.endswith(user_block):
        raise _inexpressible("a conversation without a system message renders its user turn differently")
    parts = {"system": _split(only_system, "system"), "user": _split(user_block, "user"),
             "assistant": _split(with_reply[len(with_user):], "assistant")}
    head = user_first[:-len(user_block)]
    before, after = parts["system"]
    default = head[len(before):len(head) - len(after)] if head.startswith(before) and head.endswith(after) \
        and len(head) >= len(before) + len(after) else None
    return ChatShape(parts, head, prompted[len(with_user):], default or None)


def check_shape(shape: ChatShape, tokenizer, conversations: Sequence[list[dict[str, Any]]]) -> list[int]:
    """The conversations (indices) that the shape renders differently from the Jinja template."""
    return [i for i, c in enumerate(conversations)
            if shape.render(c) != render(tokenizer, c, add_generation_prompt=True)]


def modelfile(gguf_name: str, shape: ChatShape, stops: Sequence[str]) -> str:
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{_quoted(shape.go_template())}"""']
    if shape.default_system:
        lines.append(f'SYSTEM """{_quoted(shape.default_system)}"""')
    lines += [f"PARAMETER stop {_go_string(stop)}" for stop in stops]
    return "\n".join(lines) + "\n"


def read_modelfile(text: str) -> dict[str, Any]:
    """The SYSTEM and stop parameters of a Modelfile written by ``modelfile`` (for the parity check)."""
    import json

    system = text.split('SYSTEM """', 1)[1].split('"""', 1)[0] if 'SYSTEM """' in text else None
    stops = [json.loads(line[len("PARAMETER stop "):]) for line in text.splitlines()
             if line.startswith("PARAMETER stop ")]
    return {"system": system, "stops": stops}


def _split(block: str, role: str) -> tuple[str, str]:
    if block.count(_MARK[role]) != 1:
        raise _inexpressible(f"the {role} message's content does not appear exactly once in its turn")
    before, after = block.split(_MARK[role])
    return before, after


def _go(text: str) -> str:
    """Literal text inside a Go template: only ``{{`` needs escaping."""
    return text.replace("{{", '{{ "{{" }}')


def _go_string(text: str) -> str:
    import json

    return json.dumps(text)  # a double-quoted string with \\n escapes, as Ollama's parser reads it


def _quoted(text: str) -> str:
    if '"""' in text:
        raise ExportError('the chat template contains """, which a Modelfile cannot quote')
    return text


def _inexpressible(why: str) -> ExportError:
    return ExportError(f"the run's chat template cannot be written as an Ollama TEMPLATE: {why}. Export "
                       "--format gguf instead: llama.cpp and LM Studio run the Jinja template kept in the "
                       "GGUF metadata")
