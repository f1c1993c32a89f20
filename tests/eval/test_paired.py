"""Which examples changed: the paired tests (eval/paired.py) and how every report shows them."""
import math
import random

import pytest
from scipy.stats import binomtest

from tunesmith.eval import classify_report, paired, paired_report, report as report_files


def test_mcnemar_all_discordant_one_way_is_twice_half_to_the_n():
    assert paired.mcnemar(10, 0) == pytest.approx(2 * 0.5 ** 10)
    assert paired.mcnemar(0, 10) == pytest.approx(2 * 0.5 ** 10)


def test_mcnemar_matches_the_exact_binomial_and_ignores_concordant_pairs():
    assert paired.mcnemar(7, 2) == pytest.approx(binomtest(7, 9, 0.5).pvalue)
    assert paired.mcnemar(7, 2) == pytest.approx(0.1796875)  # 2 * P(X <= 2), X ~ Bin(9, 1/2) = 2 * 46/512
    a = [1] * 7 + [0] * 2 + [1] * 30 + [0] * 11   # 30 both right, 11 both wrong: no effect on p
    b = [0] * 7 + [1] * 2 + [1] * 30 + [0] * 11
    c = paired.compare("tuned", "base", "exact match", a, b, binary=True)
    assert (c["won"], c["lost"], c["tied"]) == (7, 2, 41)
    assert c["p_value"] == pytest.approx(paired.mcnemar(7, 2))
    assert c["lost_examples"] == [7, 8]


def test_bootstrap_is_seeded_and_detects_a_real_shift_but_not_noise():
    rng = random.Random(3)
    other = [rng.random() for _ in range(60)]
    better = [x + 0.2 + rng.gauss(0, 0.05) for x in other]
    first, again = paired.paired_bootstrap(better, other), paired.paired_bootstrap(better, other)
    assert first == again and first["resamples"] == 10_000 and first["seed"] == 0
    assert first["p_value"] < 0.001 and first["ci_low"] > 0.15
    assert paired.paired_bootstrap(better, other, seed=1)["ci_low"] != first["ci_low"]
    noise = [x + rng.gauss(0, 0.05) for x in other]
    shifted_both_ways = paired.paired_bootstrap(noise, other)
    assert shifted_both_ways["ci_low"] < 0 < shifted_both_ways["ci_high"] or shifted_both_ways["p_value"] > 0.01


def test_bootstrap_of_identical_systems_is_no_difference():
    r = paired.paired_bootstrap([0.3, 0.7, 0.1], [0.3, 0.7, 0.1])
    assert r["mean_difference"] == 0 and r["p_value"] == 1.0


def test_lower_is_better_and_sample_indices():
    c = paired.compare("tuned", "base", "loss", [0.1, 0.9, 0.5], [0.4, 0.2, 0.5], binary=False,
                       higher_is_better=False, indices=[10, 20, 30], describe=lambda i: {"prompt": f"p{i}"})
    assert (c["won_examples"], c["lost_examples"], c["tied"]) == ([10], [20], 1)
    assert [(e["outcome"], e["example"], e["prompt"]) for e in c["shown"]] == [("lost", 20, "p20"), ("won", 10, "p10")]


def test_warnings_name_regressions_and_significant_losses():
    any_loss = paired.compare("fine-tuned", "base", "exact match", [1, 0, 1], [1, 1, 1], binary=True,
                              warn_on_any_loss=True)
    quiet = paired.compare("fine-tuned", "TF-IDF", "accuracy", [1, 0, 1], [1, 1, 1], binary=True)
    significant = paired.compare("fine-tuned", "few-shot", "accuracy", [0] * 10, [1] * 10, binary=True)
    found = paired.warnings([any_loss, quiet, significant])
    assert len(found) == 2
    assert "got 1 example wrong that base got right" in found[0]
    assert "significantly worse than few-shot" in found[1] and "p = 0.00195" in found[1]


def _generation_report() -> dict:
    prompts = [f"message {i}" for i in range(6)]
    tuned, few = [1, 1, 0, 1, 1, 0], [0, 1, 1, 0, 0, 1]

    def describe(i):
        return {"prompt": prompts[i], "reference": f"intent_{i}", "system_output": f"tuned says {i}",
                "other_output": f"few-shot says {i}"}

    comparison = paired.compare("fine-tuned", "base, few-shot", "exact match", tuned, few, True, describe)
    comparison["also"] = [{"metric": "ROUGE-L", "higher_is_better": True, "examples": 6, "won": 3, "lost": 2,
                           "tied": 1, "test": "bootstrap", **paired.paired_bootstrap([.9, .8, .1, .7, .9, .2],
                                                                                        [.1, .8, .9, .2, .3, .8])}]
    metrics = {side: {"loss": 1.0, "perplexity": math.e, "rouge_l": 0.5, "bleu": 10.0, "exact_match": 0.5}
               for side in ("base", "few_shot", "tuned")}
    return {"run_id": "r1", "base_model": "tiny", "data": "test.jsonl", "examples": 6, "max_new_tokens": 8,
            "metrics": metrics, "few_shot": {"shots": 3}, "samples": [], "paired": paired.section([comparison])}


def test_generation_report_lists_lost_examples_first_with_both_outputs():
    report = _generation_report()
    markdown = report_files.to_markdown(report)
    assert "## Which examples changed" in markdown
    assert "| fine-tuned | base, few-shot | exact match | 3 | 2 | 1 |" in markdown
    body = markdown.split("### fine-tuned vs base, few-shot on exact match: lost 2, won 3, tied 1")[1]
    lost_rows = [line for line in body.splitlines() if line.startswith("| lost")]
    won_rows = [line for line in body.splitlines() if line.startswith("| won")]
    assert len(lost_rows) == 2 and len(won_rows) == 3
    assert body.index(lost_rows[-1]) < body.index(won_rows[0])  # lost first
    assert "| lost | #3 | message 2 | intent_2 | tuned says 2 | few-shot says 2 | 0 vs 1 |" in body
    assert "McNemar p = 1" in markdown and "paired bootstrap (10,000 resamples)" in markdown
    page = report_files.to_html(report)
    assert 'id="which-examples-changed"' in page and page.index("<td>lost</td>") < page.index("<td>won</td>")


def test_report_without_paired_section_still_renders():
    report = _generation_report()
    del report["paired"]  # a report written before per-example comparison
    assert "Which examples changed" not in report_files.to_markdown(report)
    assert "which-examples-changed" not in report_files.to_html(report)


def test_classification_report_shows_regressions_against_the_prompted_base():
    y = [0, 1, 1, 0, 1]
    tuned = [1, 1, 0, 1, 1]  # correct (1) or wrong (0) on each sampled example
    llm = [1, 0, 1, 1, 0]

    def describe(i):
        return {"line": i + 1, "prompt": f"text {i}", "reference": "a", "system_output": "b", "other_output": "a"}

    comparison = paired.compare("fine-tuned", "base prompted few-shot", "accuracy", tuned, llm, True, describe,
                                indices=[0, 2, 4, 6, 8], warn_on_any_loss=True)
    report = {"kind": "classification", "run_id": "c1", "base_model": "tiny", "data": "t.jsonl", "examples": len(y),
              "labels": ["a", "b"], "systems": [], "notes": [], "paired": paired.section([comparison]),
              "fine_tuned": {"calibration": {"ece": 0.1}, "top_confusions": [], "per_class": []}}
    markdown = classify_report.to_markdown(report)
    assert "**⚠ regression**: fine-tuned got 1 example wrong that base prompted few-shot got right" in markdown
    assert "| lost | #5 (line 5) | text 4 |" in markdown  # sample position 2 is test example 4
    assert paired_report.terminal_lines(report["paired"])[-1].startswith("warning: fine-tuned got 1 example wrong")
