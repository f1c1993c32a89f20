"""Validation of a data file: every problem at once, each with its line number and field.

``validate_file`` is what ``tunesmith data check`` and every trainer call first: bad data never
reaches a trainer. The rules follow OpenAI's fine-tuning file checks (roles, non-empty content,
an assistant turn, ``weight`` 0/1 on assistant messages, at least 10 examples) and extend them to
the other formats.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data.formats import OPENAI_PREFERENCE_FIELDS, Format, as_preference, detect_format
from tunesmith.data.io import Row, is_csv, read_rows

ROLES = ("system", "user", "assistant")
DEFAULT_MIN_EXAMPLES = 10


@dataclass(frozen=True)
class Issue:
    line: int | None
    field: str | None
    code: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"


@dataclass(frozen=True)
class Record:
    line: int
    value: dict[str, Any]


@dataclass
class ValidationReport:
    path: str
    format: Format | None
    records: list[Record] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues

    def summary(self, limit: int = 20) -> str:
        lines = [f"{self.path}: {len(self.issues)} problem(s)"]
        lines += [f"  {self.path}:{issue}" for issue in self.issues[:limit]]
        if len(self.issues) > limit:
            lines.append(f"  ... and {len(self.issues) - limit} more (use --json for all)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format.value if self.format else None,
            "valid_records": len(self.records),
            "ok": self.ok,
            "issues": [asdict(i) for i in self.issues],
        }


def validate_file(
    path: str | Path,
    fmt: Format | str | None = None,
    min_examples: int = DEFAULT_MIN_EXAMPLES,
) -> ValidationReport:
    """Read and validate a whole file. The format is detected from the records unless given."""
    path = Path(path)
    if not path.is_file():
        report = ValidationReport(str(path), None)
        report.issues.append(Issue(None, None, "file_not_found", f"no such file: {path}"))
        return report
    rows = list(read_rows(path))
    fmt = Format(fmt) if fmt else detect_file_format(rows, path)
    report = ValidationReport(str(path), fmt)
    if fmt is None:
        report.issues += [Issue(r.line, None, *r.error) for r in rows if r.error]
        report.issues.append(Issue(None, None, "unknown_format", _unknown_format_message(rows)))
        return report
    for row in rows:
        problems = [Issue(row.line, None, *row.error)] if row.error else validate_record(row.value, fmt, row.line)
        if problems:
            report.issues += problems
        else:
            report.records.append(Record(row.line, row.value))
    if len(report.records) < min_examples:
        report.issues.append(Issue(None, None, "too_few_examples",
                                   f"{len(report.records)} valid example(s); at least {min_examples} are needed"))
    return report


def detect_file_format(rows: list[Row], path: Path) -> Format | None:
    """The format most of the first records have (a CSV file with no rows is classification)."""
    votes = Counter(detect_format(r.value) for r in rows[:200] if isinstance(r.value, dict))
    votes.pop(None, None)
    if votes:
        return votes.most_common(1)[0][0]
    return Format.CLASSIFICATION if is_csv(path) and not rows else None


def _unknown_format_message(rows: list[Row]) -> str:
    first = next((r.value for r in rows if isinstance(r.value, dict)), None)
    seen = f"the first record has fields {sorted(first)}" if first else "no record is a JSON object"
    return ("cannot tell the format: expected `messages` (chat), `prompt`+`completion`, "
            "`instruction`+`output`, `text`+`label` (classification) or `prompt`+`chosen`+`rejected` "
            f"(preference); {seen}. Pass --format to choose one.")


def validate_record(value: Any, fmt: Format, line: int) -> list[Issue]:
    """Every problem of one parsed record (empty when it is valid)."""
    if not isinstance(value, dict):
        return [Issue(line, None, "wrong_type", f"expected a JSON object, found {_type(value)}")]
    checker = {
        Format.CHAT: _check_chat,
        Format.PROMPT_COMPLETION: _check_prompt_completion,
        Format.INSTRUCTION: _check_instruction,
        Format.CLASSIFICATION: _check_classification,
        Format.PREFERENCE: _check_preference,
    }[fmt]
    return [Issue(line, f, code, msg) for f, code, msg in checker(value)]


Problem = tuple[str | None, str, str]


def _check_text(record: dict, name: str, required: bool = True) -> list[Problem]:
    if name not in record:
        return [(name, "missing_field", f"missing field `{name}`")] if required else []
    value = record[name]
    if not isinstance(value, str):
        return [(name, "wrong_type", f"must be a string, found {_type(value)}")]
    if required and not value.strip():
        return [(name, "empty_content", "is empty")]
    return []


def _check_chat(record: dict) -> list[Problem]:
    messages = record.get("messages")
    if "messages" not in record:
        return [("messages", "missing_field", "missing field `messages`")]
    if not isinstance(messages, list):
        return [("messages", "wrong_type", f"must be a list of messages, found {_type(messages)}")]
    if not messages:
        return [("messages", "empty_content", "has no messages")]
    problems: list[Problem] = []
    for i, message in enumerate(messages):
        problems += _check_message(message, f"messages[{i}]", first=i == 0)
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if "assistant" not in roles:
        problems.append(("messages", "no_assistant_turn", "has no assistant message to learn from"))
    elif all(m.get("weight") == 0 for m in messages if isinstance(m, dict) and m.get("role") == "assistant"):
        problems.append(("messages", "no_trainable_turn", "every assistant message has weight 0"))
    return problems


def _check_message(message: Any, where: str, first: bool) -> list[Problem]:
    if not isinstance(message, dict):
        return [(where, "wrong_type", f"must be an object with `role` and `content`, found {_type(message)}")]
    problems: list[Problem] = []
    role = message.get("role")
    if "role" not in message:
        problems.append((f"{where}.role", "missing_field", "missing field `role`"))
    elif role not in ROLES:
        problems.append((f"{where}.role", "unknown_role", f"unknown role {role!r}; use one of {', '.join(ROLES)}"))
    elif role == "system" and not first:
        problems.append((f"{where}.role", "misplaced_system", "a system message may only come first"))
    if "content" not in message or message["content"] is None:
        problems.append((f"{where}.content", "missing_field", "missing field `content`"))
    elif not isinstance(message["content"], str):
        problems.append((f"{where}.content", "wrong_type", f"must be a string, found {_type(message['content'])}"))
    elif not message["content"].strip():
        problems.append((f"{where}.content", "empty_content", "is empty"))
    if "weight" in message:
        weight = message["weight"]
        if isinstance(weight, bool) or weight not in (0, 1):
            problems.append((f"{where}.weight", "invalid_weight", f"must be 0 or 1, found {weight!r}"))
        elif role != "assistant":
            problems.append((f"{where}.weight", "invalid_weight", "is only allowed on assistant messages"))
    return problems


def _check_prompt_completion(record: dict) -> list[Problem]:
    return _check_text(record, "prompt") + _check_text(record, "completion")


def _check_instruction(record: dict) -> list[Problem]:
    return _check_text(record, "instruction") + _check_text(record, "input", required=False) + _check_text(record, "output")


def _check_classification(record: dict) -> list[Problem]:
    problems = _check_text(record, "text")
    if "label" not in record or record["label"] is None:
        problems.append(("label", "missing_label", "missing field `label`"))
    elif isinstance(record["label"], bool) or not isinstance(record["label"], (str, int)):
        problems.append(("label", "wrong_type", f"must be a string or an integer, found {_type(record['label'])}"))
    elif isinstance(record["label"], str) and not record["label"].strip():
        problems.append(("label", "missing_label", "is empty"))
    return problems


def _check_preference(record: dict) -> list[Problem]:
    if "preferred_output" in record:  # OpenAI's DPO shape: checked as ours, reported in its names
        problems = _check_preference(as_preference(record))
        return [(_openai_name(f), code, msg.replace(f"`{f}`", f"`{_openai_name(f)}`") if f else msg)
                for f, code, msg in problems]
    problems: list[Problem] = []
    for name in ("prompt", "chosen", "rejected"):
        value = record.get(name)
        if name not in record:
            problems.append((name, "missing_field", f"missing field `{name}`"))
        elif isinstance(value, list):
            if not value:
                problems.append((name, "empty_content", "has no messages"))
            for i, message in enumerate(value):
                problems += _check_message(message, f"{name}[{i}]", first=i == 0)
        else:
            problems += _check_text(record, name)
    if not problems and record["chosen"] == record["rejected"]:
        problems.append(("rejected", "identical_pair", "is identical to `chosen`"))
    return problems


def _openai_name(field: str | None) -> str | None:
    if field is None:
        return None
    head, dot, rest = field.partition("[")
    return OPENAI_PREFERENCE_FIELDS.get(head, head) + (dot + rest if dot else "")


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
