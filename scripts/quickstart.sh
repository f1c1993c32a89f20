#!/usr/bin/env bash
# The quickstart, from a fresh clone: set up, pull the default model, check and split the
# example data, LoRA fine-tune SmolLM2-135M-Instruct, evaluate it against its base model.
#   ./scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-env.sh

data=examples/support-routing/data.jsonl
work=build/quickstart
start=$(date +%s)

step() { printf '\n\033[1m== %s\033[0m\n' "$1"; }

step "1/5 pull the default model"
tunesmith models pull smollm2-135m-instruct

step "2/5 check the data"
tunesmith data check "$data" --max-length 256

step "3/5 split it 80/10/10, stratified by intent"
tunesmith data split "$data" --ratios 0.8,0.1,0.1 --stratify final_answer --seed 0 -o "$work"

step "4/5 LoRA fine-tune"
tunesmith train examples/quickstart.yaml \
  --set data.train="$work/data.train.jsonl" --set data.validation="$work/data.validation.jsonl"

step "5/5 evaluate the fine-tuned model against its base model on the held-out test split"
tunesmith eval quickstart --data "$work/data.test.jsonl" --samples 2

system=$(python -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["messages"][0]["content"])' "$data")
printf '\nquickstart finished in %s s. Try the fine-tuned model:\n  tunesmith generate quickstart --system "%s" --prompt "%s"\n' \
  "$(( $(date +%s) - start ))" "$system" "I lost my card yesterday, what do I do?"
