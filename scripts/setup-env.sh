# Sourced by the other scripts and .ci/run: create .venv, install torch==2.13.0 first (the CPU build
# here), then tunesmith with every extra and the test tools at the exact versions of constraints.txt
# (./scripts/lock.sh refreshes that file). Idempotent and quiet when everything is already there.
set -euo pipefail
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
source .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first: a bare `torch` requirement would pull the newest CUDA build (several GB).
if ! python -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  echo "installing torch==2.13.0 ..."
  pip install --quiet "torch==2.13.0"
fi
# all: every optional feature (the server, search, PostgreSQL, W&B), which the quickstart and the
# tests use; test: pytest, the browser tests' playwright, ruff and import-linter.
if ! python -c "import tunesmith, pytest, importlinter" 2>/dev/null || ! command -v ruff >/dev/null \
    || [ pyproject.toml -nt .venv/.tunesmith-installed ] || [ constraints.txt -nt .venv/.tunesmith-installed ]; then
  echo "installing tunesmith and its dependencies (constraints.txt) ..."
  pip install --quiet -c constraints.txt -e ".[all,test]"
  touch .venv/.tunesmith-installed
fi
