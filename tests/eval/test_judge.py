"""The LLM judge: verdicts parsed and combined over a position swap, flips and unparsed replies
counted, rubric scores, agreement with people (κ, ρ) and its warning, and answer files that do
not line up named by line and field. The judge here is a scripted client, or the tiny random
model (whose replies cannot be parsed: counted, not crashed)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import write_jsonl
from tunesmith.errors import ConfigError, DataError
from tunesmith.eval import judge
from tunesmith.eval.judge import Pair


class Scripted:
    """A ChatClient whose reply is ``answer(messages)``; it records what it was asked."""

    name = "scripted"

    def __init__(self, answer):
        self.answer, self.asked = answer, []

    def chat(self, messages, max_tokens=256, temperature=0.0):
        return self.chat_many([messages], max_tokens, temperature)[0]

    def chat_many(self, conversations, max_tokens=256, temperature=0.0):
        self.asked += list(conversations)
        return [self.answer(m) for m in conversations]


def _pairs(n: int) -> list[Pair]:
    # the better answer says "GOOD"; it is A on even pairs, B on odd ones
    return [Pair(f"p{i}", [{"role": "user", "content": f"prompt {i}"}],
                 "GOOD answer" if i % 2 == 0 else "bad answer", "bad answer" if i % 2 == 0 else "GOOD answer")
            for i in range(n)]


def _shown(messages) -> tuple[str, str]:
    text = messages[-1]["content"]
    return text.split("[Answer A]\n")[1].split("\n\n")[0], text.split("[Answer B]\n")[1].split("\n\n")[0]


def _fair(messages) -> str:
    first, _ = _shown(messages)
    return "A" if "GOOD" in first else "B"


def test_a_fair_judge_agrees_with_itself_under_the_swap_and_with_people():
    pairs = _pairs(6)
    human = judge.human_judgements([{"id": p.id, "preference": "A" if i % 2 == 0 else "B"} for i, p in enumerate(pairs)])
    client = Scripted(_fair)
    report = judge.judge_pairs(pairs, client, human=human)
    assert len(client.asked) == 12  # each pair twice
    assert [_shown(m) for m in client.asked[:2]] == [("GOOD answer", "bad answer"), ("bad answer", "GOOD answer")]
    s = report["summary"]
    assert (s["a_wins"], s["b_wins"], s["ties"], s["flip_rate"], s["first_position_rate"]) == (0.5, 0.5, 0.0, 0.0, 0.5)
    assert report["agreement"]["kappa"] == pytest.approx(1.0) and report["agreement"]["warning"] is None


def test_a_judge_that_always_names_the_first_answer_flips_every_pair_and_is_warned_about():
    pairs = _pairs(6)
    human = judge.human_judgements([{"id": p.id, "preference": "A" if i % 2 == 0 else "B"} for i, p in enumerate(pairs)])
    report = judge.judge_pairs(pairs, Scripted(lambda m: "A"), human=human)
    s = report["summary"]
    assert s["flip_rate"] == 1.0 and s["ties"] == 1.0 and s["first_position_rate"] == 1.0
    agreement = report["agreement"]
    assert agreement["accuracy"] == 0.0 and agreement["kappa"] <= 0.0
    assert "low agreement" in agreement["warning"] and any(line.startswith("Warning") for line in report["lines"])


def test_unparsed_replies_are_counted_and_their_pairs_left_out():
    pairs = _pairs(4)
    replies = iter(["A", "B", "I think both have merits", "A", "B", "A", "[[B]]", "Answer A is better."])
    report = judge.judge_pairs(pairs, Scripted(lambda m: next(replies)))
    s = report["summary"]
    assert s["unparsed"] == 1 and s["unparsed_replies"] == 1 and s["judged"] == 3
    assert [e["verdict"] for e in report["examples"]] == ["A", None, "B", "B"]


@pytest.mark.parametrize("reply, verdict", [("B", "B"), ("**A**", "A"), ("Verdict: tie", "tie"), ("The winner is B.", "B"),
                                            ("A.", "A"), ("B is better", "B"), ("Both are equally good.", "tie"),
                                            ("", None), ("A summary should be short", None)])
def test_verdicts_are_read_from_the_ways_judges_say_them(reply, verdict):
    assert judge.parse_verdict(reply) == verdict


def test_rubric_scores_per_system_and_their_rank_agreement_with_people(tmp_path):
    rubric_file = tmp_path / "rubric.yaml"
    rubric_file.write_text("criteria: [faithful to the dialogue, covers the key point]\n"
                           "scale: {1: useless, 3: partly right, 5: faithful and complete}\n")
    rubric = judge.load_rubric(rubric_file)
    assert (rubric.low, rubric.high) == (1, 5) and "faithful to the dialogue" in rubric.text
    pairs = _pairs(4)
    client = Scripted(lambda m: "Score: 5" if "GOOD answer" in m[-1]["content"].split("[Answer]")[1] else "2")
    human = judge.human_judgements([{"id": p.id, "system": side, "rating": 4 if "GOOD" in answer else 1}
                                    for p in pairs for side, answer in (("A", p.a), ("B", p.b))])
    report = judge.judge_pairs(pairs, client, rubric, human)
    assert report["summary"]["mean_a"] == report["summary"]["mean_b"] == 3.5
    assert report["agreement"]["spearman"] == pytest.approx(1.0) and report["agreement"]["answers"] == 8
    assert human.preferences == {"p0": "A", "p1": "B", "p2": "A", "p3": "B"}  # derived from the ratings


def test_a_markdown_rubric_takes_its_scale_from_its_lines(tmp_path):
    path = tmp_path / "rubric.md"
    path.write_text("# Summary quality\n\n- 0: wrong\n- 1: partly right\n- 2: right and complete\n")
    assert (judge.load_rubric(path).low, judge.load_rubric(path).high) == (0, 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("scale: {1: bad, 5: good}\n")
    with pytest.raises(ConfigError, match="needs criteria"):
        judge.load_rubric(bad)


def _answers(path, rows):
    return write_jsonl(path, rows)


def test_answer_files_line_up_by_id_or_say_what_is_wrong(tmp_path):
    a = _answers(tmp_path / "a.jsonl", [{"id": 1, "prompt": "p1", "answer": "x"}, {"id": 2, "prompt": "p2", "answer": "y"}])
    b = _answers(tmp_path / "b.jsonl", [{"id": 2, "prompt": "p2", "output": "v"}, {"id": 1, "prompt": "p1", "output": "w"}])
    pairs = judge.pair_up(judge.read_answers(a), judge.read_answers(b))
    assert [(p.id, p.a, p.b) for p in pairs] == [("1", "x", "w"), ("2", "y", "v")]
    c = _answers(tmp_path / "c.jsonl", [{"id": 1, "prompt": "p1", "answer": "w"}, {"id": 3, "prompt": "p2", "answer": "v"}])
    with pytest.raises(DataError, match=r"only in A: \['2'\].*only in B: \['3'\]"):
        judge.pair_up(judge.read_answers(a), judge.read_answers(c))
    d = _answers(tmp_path / "d.jsonl", [{"prompt": "p1", "answer": "w"}, {"prompt": "other", "answer": "v"}])
    with pytest.raises(DataError, match="line 2: the prompt in A differs"):
        judge.pair_up(judge.read_answers(a), judge.read_answers(d))


@pytest.mark.parametrize("line, message", [('{"prompt": "p"}', "2: needs an answer"),
                                           ('{"answer": "x"}', "2: needs a prompt"),
                                           ("not json", "2: not JSON")])
def test_a_bad_answer_line_is_named_by_line_and_field(tmp_path, line, message):
    path = tmp_path / "a.jsonl"
    path.write_text('{"prompt": "p", "answer": "x"}\n' + line + "\n")
    with pytest.raises(DataError, match=message):
        judge.read_answers(path)


def test_human_files_are_checked_line_by_line(tmp_path):
    path = tmp_path / "human.jsonl"
    path.write_text(json.dumps({"id": "s1", "preference": "C"}) + "\n")
    with pytest.raises(DataError, match="1: preference must be A, B or tie"):
        judge.read_human(path)


def test_review_queue_ratings_are_matched_to_the_judged_answers():
    pairs = [Pair("1", [{"role": "user", "content": "Where is my card?"}], "It ships today.", "No idea.")]
    reviews = [{"messages": [{"role": "user", "content": "Where is  my card?"}], "answer": "It ships today.", "rating": 1},
               {"messages": [{"role": "user", "content": "Where is my card?"}], "answer": "No idea.", "rating": 0,
                "correction": "It ships today."},
               {"messages": [{"role": "user", "content": "Other"}], "answer": "No idea.", "rating": -1}]
    rows = judge.reviews_as_human(pairs, reviews)
    assert rows == [{"id": "1", "system": "A", "rating": 1}, {"id": "1", "system": "B", "rating": -1}]
    assert judge.human_judgements(rows).preferences == {"1": "A"}


def test_the_tiny_random_model_judges_without_crashing_and_its_report_is_written(tmp_path, tiny_model_dir, workspace):
    """A real local judge (chat_client on a model directory): its replies are noise, so they are
    counted as unparsed, and the report files are still written."""
    a = _answers(tmp_path / "a.jsonl", [{"id": i, "prompt": f"p{i}", "answer": "x"} for i in range(3)])
    b = _answers(tmp_path / "b.jsonl", [{"id": i, "prompt": f"p{i}", "answer": "y"} for i in range(3)])
    human = [{"id": str(i), "preference": "A"} for i in range(3)]
    report = judge.judge_files(a, b, judge.JudgeSpec(str(tiny_model_dir)), workspace, human, None, tmp_path / "out",
                               log=lambda m: None)
    s = report["summary"]
    assert s["pairs"] == 3 and s["judged"] + s["unparsed"] == 3
    assert s["unparsed_replies"] == sum(v is None for e in report["examples"] for v in e["verdicts"])
    assert (tmp_path / "out" / "judge.md").read_text().startswith("# Judge: a (A) vs b (B)")
    assert json.loads((tmp_path / "out" / "judge.json").read_text())["pairs"] == 3


@pytest.mark.slow
def test_eval_with_a_judge_compares_the_fine_tune_with_each_baseline_in_the_report(tiny_model_dir, tmp_path, workspace):
    import tunesmith
    from tests.conftest import chat_records
    from tunesmith.config import load_config

    train = write_jsonl(tmp_path / "train.jsonl", chat_records(20))
    config = load_config(None, [f"model={tiny_model_dir}", f"data.train={train}", "training.max_steps=2"])
    run = tunesmith.train(config, workspace=workspace).run
    with pytest.raises(ConfigError, match="--rubric .*missing.yaml: no such file"):  # before any model loads
        tunesmith.evaluate(run.id, train, max_examples=4, workspace=workspace, log=lambda m: None,
                           judge=str(tiny_model_dir), rubric=tmp_path / "missing.yaml")
    report = tunesmith.evaluate(run.id, train, max_examples=4, samples=1, workspace=workspace, log=lambda m: None,
                                judge=str(tiny_model_dir))
    comparisons = {c["other_key"]: c for c in report["judge"]["comparisons"]}
    assert set(comparisons) == {"base", "few_shot"}
    for c in comparisons.values():
        assert c["systems"]["A"] == "fine-tuned" and c["summary"]["pairs"] == 4 and len(c["examples"]) == 4
    assert len(report["samples"]) == 1  # every output was kept for the judge, one shown
    markdown = (run.eval_dir / "report.md").read_text()
    assert "## LLM judge" in markdown and "fine-tuned wins" in markdown
    assert 'id="llm-judge"' in (run.eval_dir / "report.html").read_text()


def test_the_review_queue_calibrates_the_judge_through_the_api(tmp_path, workspace, monkeypatch):
    """``api.judge(review_queue=True)``: the queue's ratings of these very answers (the api
    layer reads jobs/feedback.py; the eval layer gets plain rows)."""
    from tunesmith import api
    from tunesmith.jobs.db import Database
    from tunesmith.jobs.feedback import add

    prompts = [f"Where is parcel {i}?" for i in range(4)]
    good = [f"GOOD answer {i}" for i in range(4)]
    bad = [f"bad answer {i}" for i in range(4)]  # the good one is A on even pairs, B on odd ones
    a = _answers(tmp_path / "a.jsonl", [{"prompt": p, "answer": (good if i % 2 == 0 else bad)[i]} for i, p in enumerate(prompts)])
    b = _answers(tmp_path / "b.jsonl", [{"prompt": p, "answer": (bad if i % 2 == 0 else good)[i]} for i, p in enumerate(prompts)])
    db = Database.for_workspace(workspace)
    for i, p in enumerate(prompts):
        add(db, {"messages": [{"role": "user", "content": p}], "answer": f"GOOD answer {i}", "rating": 1})
        add(db, {"messages": [{"role": "user", "content": p}], "answer": f"bad answer {i}", "correction": "better"})
    monkeypatch.setattr(judge.JudgeSpec, "client", lambda self, workspace, log=print: Scripted(_fair))
    report = api.judge(a, b, "scripted", review_queue=True, out=tmp_path / "out", workspace=workspace,
                       log=lambda m: None)
    assert report["agreement"]["pairs"] == 4 and report["agreement"]["kappa"] == pytest.approx(1.0)
    assert report["summary"]["a_wins"] == report["summary"]["b_wins"] == 0.5
    assert judge.human_judgements(judge.reviews_as_human(
        judge.pair_up(judge.read_answers(a), judge.read_answers(b)),
        api._reviews(workspace))).preferences == {"1": "A", "2": "B", "3": "A", "4": "B"}
