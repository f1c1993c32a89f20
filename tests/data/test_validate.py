"""Every validation rule, with the line and field it must name; valid files pass untouched."""
import json

import pytest

from tunesmith.data.validate import validate_file

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write_lines(tmp_path, lines, name="data.jsonl", raw=False):
    path = tmp_path / name
    if raw:
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n")
    return path


def only_issue(report):
    assert len(report.issues) == 1, report.issues
    return report.issues[0]


def with_bad_line(tmp_path, bad, good_count=12):
    """A file of good records with ``bad`` as line 3."""
    lines = [GOOD, GOOD, bad] + [GOOD] * (good_count - 2)
    return validate_file(write_lines(tmp_path, lines))


@pytest.mark.parametrize("bad, code, field", [
    ('{"messages": [', "invalid_json", None),
    ({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "unknown_role", "messages[0].role"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}, "missing_field", "messages[0].content"),
    ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]}, "empty_content", "messages[0].content"),
    ({"messages": [{"role": "user", "content": "only a question"}]}, "no_assistant_turn", "messages"),
    ({"messages": "hello"}, "wrong_type", "messages"),
    ({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]}, "wrong_type", "messages[0].content"),
    ({"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}, "missing_field", "messages[0].role"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]}, "invalid_weight", "messages[1].weight"),
    ({"messages": [{"role": "user", "content": "x", "weight": 1}, {"role": "assistant", "content": "y"}]}, "invalid_weight", "messages[0].weight"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0}]}, "no_trainable_turn", "messages"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "y"}]}, "misplaced_system", "messages[1].role"),
    ({"messages": []}, "empty_content", "messages"),
    ([1, 2], "wrong_type", None),
])
def test_each_chat_rule_names_line_and_field(tmp_path, bad, code, field):
    issue = only_issue(with_bad_line(tmp_path, bad))
    assert (issue.line, issue.code, issue.field) == (3, code, field)


def test_invalid_utf8_is_reported_on_its_line_and_the_rest_is_read(tmp_path):
    good = json.dumps(GOOD).encode()
    path = write_lines(tmp_path, b"\n".join([good, b'{"messages": "\xff\xfe"}', *[good] * 10]) + b"\n", raw=True)
    report = validate_file(path)
    issue = only_issue(report)
    assert (issue.line, issue.code) == (2, "invalid_utf8")
    assert len(report.records) == 11


def test_every_problem_is_reported_at_once(tmp_path):
    lines = [GOOD, "not json", {"messages": [{"role": "user", "content": ""}]}, GOOD]
    report = validate_file(write_lines(tmp_path, lines), min_examples=1)
    assert [(i.line, i.code) for i in report.issues] == [
        (2, "invalid_json"), (3, "empty_content"), (3, "no_assistant_turn")]


def test_too_few_examples(tmp_path):
    issue = only_issue(validate_file(write_lines(tmp_path, [GOOD] * 3)))
    assert issue.code == "too_few_examples" and "at least 10" in issue.message


def test_bom_crlf_and_blank_lines_are_accepted(tmp_path):
    body = "\r\n".join(json.dumps(GOOD) for _ in range(10)) + "\r\n\r\n"
    path = write_lines(tmp_path, b"\xef\xbb\xbf" + body.encode(), raw=True)
    report = validate_file(path)
    assert report.ok and len(report.records) == 10 and report.format.value == "chat"


def test_unknown_format_explains_what_is_expected(tmp_path):
    report = validate_file(write_lines(tmp_path, [{"question": "q", "answer": "a"}] * 10))
    issue = only_issue(report)
    assert issue.code == "unknown_format" and "question" in issue.message


def test_prompt_completion_and_instruction_rules(tmp_path):
    pc = validate_file(write_lines(tmp_path, [{"prompt": "p", "completion": "c"}] * 10 + [{"prompt": "p", "completion": ""}]))
    assert pc.format.value == "prompt_completion"
    assert [(i.line, i.field, i.code) for i in pc.issues] == [(11, "completion", "empty_content")]
    ins = validate_file(write_lines(tmp_path, [{"instruction": "i", "output": "o"}] * 10 + [{"instruction": "i", "input": 3, "output": "o"}], name="i.jsonl"))
    assert ins.format.value == "instruction"
    assert [(i.line, i.field, i.code) for i in ins.issues] == [(11, "input", "wrong_type")]


def test_classification_csv_missing_label_and_row_lines(tmp_path):
    rows = ["text,label"] + [f"message {i},billing" for i in range(10)] + ['"quoted, text",', "text only"]
    path = tmp_path / "c.csv"
    path.write_text("\n".join(rows) + "\n")
    report = validate_file(path)
    assert report.format.value == "classification"
    assert [(i.line, i.field, i.code) for i in report.issues] == [
        (12, "label", "missing_label"), (13, None, "wrong_column_count")]


def test_classification_jsonl_label_type(tmp_path):
    lines = [{"text": "t", "label": "a"}] * 10 + [{"text": "t", "label": 1.5}, {"text": "t"}]
    report = validate_file(write_lines(tmp_path, lines))
    assert [(i.line, i.code) for i in report.issues] == [(11, "wrong_type"), (12, "missing_label")]


def test_preference_rules(tmp_path):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    lines = [good] * 10 + [{"prompt": "p", "chosen": "a", "rejected": "a"}, {"prompt": "p", "chosen": "a"}]
    report = validate_file(write_lines(tmp_path, lines))
    assert report.format.value == "preference"
    assert [(i.line, i.field, i.code) for i in report.issues] == [
        (11, "rejected", "identical_pair"), (12, "rejected", "missing_field")]


def test_openai_dpo_lines_are_preference_records_with_problems_in_their_names(tmp_path):
    def line(chosen="Hello!", rejected="What?"):
        return {"input": {"messages": [{"role": "user", "content": "Hi"}]},
                "preferred_output": [{"role": "assistant", "content": chosen}],
                "non_preferred_output": [{"role": "assistant", "content": rejected}]}

    lines = [line()] * 10 + [line(chosen=""), {"input": {}, **{k: v for k, v in line().items() if k != "input"}},
                             {k: v for k, v in line().items() if k != "non_preferred_output"}]
    report = validate_file(write_lines(tmp_path, lines))
    assert report.format.value == "preference"
    assert [(i.line, i.field, i.code) for i in report.issues] == [
        (11, "preferred_output[0].content", "empty_content"), (12, "input.messages", "missing_field"),
        (13, "non_preferred_output", "missing_field")]
    assert "missing field `non_preferred_output`" in report.summary()


def test_missing_file(tmp_path):
    assert only_issue(validate_file(tmp_path / "nope.jsonl")).code == "file_not_found"


def test_too_few_examples_is_reported_beside_other_problems(tmp_path):
    report = validate_file(write_lines(tmp_path, [GOOD, "not json", GOOD]))
    assert [(i.line, i.code) for i in report.issues] == [(2, "invalid_json"), (None, "too_few_examples")]
