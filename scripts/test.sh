#!/usr/bin/env bash
# The test suite: unit tests (tiny random models, seconds each), the slow tier (tiny models
# trained end to end) and the integration tests on the real SmolLM2-135M (pulled once).
#   ./scripts/test.sh                 everything
#   ./scripts/test.sh -m "not integration"   skip the real-model tests
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-env.sh
source scripts/browser-setup.sh
source scripts/postgres-setup.sh
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# One run, so its closing line counts everything: the tests and the doctests of tunesmith/.
python -m pytest --durations=15 --doctest-modules tunesmith tests "$@"
