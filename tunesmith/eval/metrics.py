"""Pure metric functions for generated text: ROUGE-L, BLEU, final-answer exact match, perplexity.

ROUGE uses Google's ``rouge-score`` and BLEU ``sacrebleu`` (both offline; ``evaluate.load``
needs the network and is avoided).
"""
from __future__ import annotations

import math
import re
from typing import Sequence


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 in [0, 1].

    >>> round(rouge_l(["the cat sat"], ["the cat sat down"]), 3)
    0.857
    """
    scores = rouge_l_scores(predictions, references)
    return sum(scores) / len(scores) if scores else 0.0


def rouge_l_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F1 of each prediction against its reference (what a paired comparison needs).

    >>> [round(s, 3) for s in rouge_l_scores(["the cat sat", "a dog"], ["the cat sat down", "a dog"])]
    [0.857, 1.0]
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, 0-100)."""
    import sacrebleu

    if not predictions:
        return 0.0
    return sacrebleu.corpus_bleu(list(predictions), [list(references)]).score


def extract_final_answer(text: str) -> str:
    """The answer part of a generation: after the last ``####`` (GSM8K style), else the whole text.

    >>> extract_final_answer("so 3 + 4 = 7\\n#### 7")
    '7'
    >>> extract_final_answer("card_arrival")
    'card_arrival'
    """
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else ""


def normalize_answer(text: str) -> str:
    """Case, surrounding punctuation, currency signs and thousands separators do not count.

    >>> normalize_answer(" $1,000. ")
    '1000'
    >>> normalize_answer("Card_Arrival")
    'card_arrival'
    """
    text = text.strip().lower()
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = text.replace("$", "").replace("€", "").replace("£", "")
    text = re.sub(r"\s+", " ", text)
    return text.strip(" .,:;!?\"'`")


def exact_match(predictions: Sequence[str], answers: Sequence[str]) -> float:
    """Share of predictions whose extracted final answer equals the expected answer.

    >>> exact_match(["... #### 42", "#### 41"], ["42", "42"])
    0.5
    """
    if not answers:
        return 0.0
    return sum(exact_matches(predictions, answers)) / len(answers)


def exact_matches(predictions: Sequence[str], answers: Sequence[str]) -> list[int]:
    """1 where a prediction's extracted final answer equals the expected answer, else 0.

    >>> exact_matches(["... #### 42", "#### 41"], ["42", "42"])
    [1, 0]
    """
    return [int(normalize_answer(extract_final_answer(p)) == normalize_answer(str(a)))
            for p, a in zip(predictions, answers)]


def perplexity(mean_nll: float) -> float:
    """exp of the mean negative log-likelihood per token (capped to stay finite)."""
    return math.exp(min(mean_nll, 50.0))
