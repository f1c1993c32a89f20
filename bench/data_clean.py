"""Benchmark: clean a synthetic chat dataset of 1,000,000 records (~500 MB) in a streaming pass.

    python bench/data_clean.py                   # 1,000,000 records
    python bench/data_clean.py --records 100000  # a quicker run

Targets (issue #3): peak RSS under 2 GB, under 15 minutes on a 2-core machine. The cleaner
runs in a child process, so peak RSS is its own (the generator streams and holds nothing).
About 2 % exact duplicates, 2 % near-duplicates (case, punctuation, one-word edits), 1 % records
with personal data, 0.2 % malformed lines are planted; the printed counts show they were found.
Prints records/s and peak RSS, and the baseline it is compared with: reading and parsing the
same file with json.loads alone (the floor of any cleaner written in Python).
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# ~5,000 pseudo-words drawn with a Zipf-like skew, so common words repeat as in real text.
WORDS = [f"{a}{b}{c}" for a in ("ka", "lo", "mi", "su", "te", "ra", "no", "vi", "de", "po", "an", "el", "or", "us")
         for b in ("ber", "tan", "mos", "lik", "ven", "dor", "pas", "rin", "gol", "fet", "sam", "qua", "zen", "hul",
                   "bix", "cor", "dal", "fim", "gun", "hep") for c in ("", "s", "ed", "ing", "er", "ly", "al", "en",
                                                                        "ist", "ous", "ment", "ness", "ful", "ive",
                                                                        "ity", "ant", "ure", "ism")]
CUM_WEIGHTS = list(itertools.accumulate(1 / (rank + 10) for rank in range(len(WORDS))))


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, cum_weights=CUM_WEIGHTS, k=n)).capitalize() + "."


def generate(path: Path, records: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    recent: list[dict] = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(records):
            roll = rng.random()
            if roll < 0.002:
                f.write('{"messages": [{"role": "user", "content": "truncated\n')
                continue
            if roll < 0.022 and recent:
                record = rng.choice(recent)                      # exact duplicate
            elif roll < 0.042 and recent:
                record = _near_copy(rng.choice(recent), rng)     # near-duplicate
            else:
                question = sentence(rng, rng.randint(10, 25)) + " " + sentence(rng, rng.randint(5, 15))
                if roll > 0.99:
                    question += f" Reach me at user{i}@example.com or +44 20 7946 {rng.randint(1000, 9999)}."
                record = {"messages": [
                    {"role": "system", "content": "You are a helpful support assistant for Example Corp."},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": " ".join(sentence(rng, rng.randint(8, 20)) for _ in range(3))}]}
                recent = (recent + [record])[-1000:]
            f.write(json.dumps(record) + "\n")


def _near_copy(record: dict, rng: random.Random) -> dict:
    messages = [dict(m) for m in record["messages"]]
    user = messages[1]["content"]
    kind = rng.randrange(3)
    if kind == 0:
        user = user.upper()
    elif kind == 1:
        user = user.replace(".", "!").replace(" ", ", ", 1)
    else:
        words = user.split()
        words[rng.randrange(len(words))] = rng.choice(WORDS)
        user = " ".join(words)
    messages[1]["content"] = user
    return {"messages": messages}


CHILD = """
import json, sys, time
from tunesmith.config import CleanConfig
from tunesmith.data.clean import clean_file
start = time.time()
summary = clean_file(sys.argv[1], sys.argv[2], CleanConfig())
print(json.dumps({"seconds": time.time() - start, **summary.to_dict()}))
"""

BASELINE = """
import json, sys, time
start, n = time.time(), 0
for line in open(sys.argv[1], encoding="utf-8"):
    try:
        json.loads(line)
        n += 1
    except ValueError:
        pass
print(json.dumps({"seconds": time.time() - start, "records": n}))
"""


def run_child(code: str, *args: str) -> tuple[dict, float]:
    """Run code in a child; return its JSON output and the child's peak RSS in GB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return json.loads(out.stdout.strip().splitlines()[-1]), max(peak_kb, before) / 1024 / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None, help="where the generated file goes (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        data, out = Path(tmp) / "synthetic.jsonl", Path(tmp) / "clean.jsonl"
        start = time.time()
        generate(data, args.records)
        print(f"generated {args.records:,} records, {data.stat().st_size / 1e6:.0f} MB in {time.time() - start:.0f} s")
        base, _ = run_child(BASELINE, str(data))
        result, peak_gb = run_child(CHILD, str(data), str(out))
    rate = result["input_records"] / result["seconds"]
    base_rate = base["records"] / base["seconds"]
    print(json.dumps({k: result[k] for k in ("input_records", "kept", "removed", "modified", "balanced",
                                               "removed_by_step", "personal_data")}, indent=1))
    print(f"clean: {result['seconds']:.0f} s, {rate:,.0f} records/s, peak RSS {peak_gb:.2f} GB "
          f"(targets: < 900 s, < 2 GB)")
    print(f"baseline (json.loads of every line, nothing else): {base['seconds']:.0f} s, {base_rate:,.0f} records/s; "
          f"clean / baseline time = {result['seconds'] / base['seconds']:.1f}x")


if __name__ == "__main__":
    main()
