"""Chat templates: conversations into token ids and labels (loss on assistant tokens only),
prompts for generation, and where a reply ends (stop tokens, stop strings, streamed or not).

TRL's ``assistant_only_loss`` needs ``{% generation %}`` markers in the chat template, which
almost no template has (SmolLM2's doesn't; see huggingface/trl#4879). Instead we find each
assistant turn's characters by rendering prefixes of the conversation — the text the template
adds for message *i* is ``render(m[:i+1])`` minus ``render(m[:i], add_generation_prompt=True)``:
the assistant's content and its end-of-turn token, without the role header — and map those
characters to tokens with the fast tokenizer's offsets. Works with any template that renders
prefixes stably (we check, and say so when one doesn't).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from tunesmith.errors import TemplateError

IGNORE = -100

# ChatML: the template we give models that ship none (e.g. base models such as Gemma 3 270M).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_STOP = "<|im_end|>"


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def loss_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def ensure_chat_template(tokenizer, template: str | None = None) -> bool:
    """Give the tokenizer a chat template (the configured one, or ChatML when it has none).

    Returns True when ChatML was supplied, so callers can tell the user.
    """
    if template:
        tokenizer.chat_template = template
        return False
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
        return True
    return False


def render(tokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> str:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=add_generation_prompt)


def trained_spans(tokenizer, messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans that carry loss.

    A span is an assistant message (content + end-of-turn) whose ``weight`` is not 0.
    """
    full = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        head = render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        upto = render(tokenizer, messages[: i + 1])
        if not full.startswith(upto) or not upto.startswith(head):
            raise TemplateError(
                "the chat template does not render conversation prefixes stably, so assistant turns "
                "cannot be located; set `chat_template` in the config (e.g. ChatML)")
        spans.append((len(head), len(upto)))
    return full, spans


def encode_chat(tokenizer, messages: list[dict[str, Any]], max_length: int, train_on: str = "assistant") -> Encoded:
    """Token ids and labels, truncated to ``max_length``. Labels are ``IGNORE`` outside trained
    assistant spans, or nowhere with ``train_on="all"``."""
    if train_on == "all":
        text, spans = render(tokenizer, messages), None
    else:
        text, spans = trained_spans(tokenizer, messages)
    # The template writes the special tokens itself (bos, im_start ...): add none on top.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = list(ids) if spans is None else \
        [tid if _inside(start, end, spans) else IGNORE for tid, (start, end) in zip(ids, offsets)]
    truncated = len(ids) > max_length
    return Encoded(ids[:max_length], labels[:max_length], truncated)


def _inside(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    # A token belongs to a span when its first character does; zero-width tokens never carry loss.
    return end > start and any(lo <= start < hi for lo, hi in spans)


def prompt_ids(tokenizer, messages: list[dict[str, Any]]) -> list[int]:
    """Token ids of a conversation ready for the assistant's next turn (for generation)."""
    text = render(tokenizer, messages, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def stop_strings(tokenizer) -> list[str]:
    """End-of-turn markers that are plain text in this vocabulary (ChatML on a model without its
    tokens, e.g. Gemma 3 base): generation must stop on the string, not on a token."""
    if tokenizer.chat_template and CHATML_STOP in tokenizer.chat_template:
        im_end = tokenizer.convert_tokens_to_ids(CHATML_STOP)
        if not isinstance(im_end, int) or im_end == tokenizer.unk_token_id:
            return [CHATML_STOP]
    return []


def stops_for(tokenizer, extra: Sequence[str] = ()) -> list[str]:
    """The strings that end a reply: a request's own (``extra``), then the template's end of turn
    where it is plain text (``stop_strings``)."""
    return list(extra) + stop_strings(tokenizer)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text before the earliest stop string in it, and whether there was one.

    >>> cut_at_stop("card_arrival<|im_end|>\\n<|im_start|>user", ["\\n", "<|im_end|>"])
    ('card_arrival', True)
    >>> cut_at_stop("no stop here", ["<|im_end|>"])
    ('no stop here', False)
    """
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return (text[:min(found)], True) if found else (text, False)


def strip_stop_strings(text: str, stops: Sequence[str]) -> str:
    return cut_at_stop(text, stops)[0]


def cut_stream(pieces: Iterable[str], stops: Sequence[str], on_stop: Callable[[], None] = lambda: None) -> Iterator[str]:
    """``pieces`` with the text from the first stop string on removed. As many characters as the
    longest stop string could straddle are held back between pieces; at a stop, ``on_stop()``
    (stop generating) and the end. Empty pieces are not passed on.

    >>> list(cut_stream(["Hel", "lo<|im", "_end|>", "never"], ["<|im_end|>"]))
    ['Hello']
    >>> list(cut_stream(["a", "b"], []))
    ['a', 'b']
    """
    longest, held = max((len(s) for s in stops), default=0), ""
    for piece in pieces:
        held += piece
        cut, stopped = cut_at_stop(held, stops)
        if stopped:
            on_stop()
            if cut:
                yield cut
            return
        if len(held) > longest:
            yield held[:len(held) - longest]
            held = held[len(held) - longest:]
    if held:
        yield held


def stop_token_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn: eos, and ChatML's end marker when it is one token."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    im_end = tokenizer.convert_tokens_to_ids(CHATML_STOP)
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return sorted(ids)
