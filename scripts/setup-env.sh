# Sourced by the other scripts: create .venv, install torch (CPU build here) when none is
# present, then tunesmith itself. Idempotent and quiet when everything is already there.
set -euo pipefail
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
source .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first: a bare `torch` requirement would pull the newest CUDA build (several GB).
if ! python -c "import torch" 2>/dev/null; then
  echo "installing torch==2.13.0 ..."
  pip install --quiet "torch==2.13.0"
fi
if ! python -c "import tunesmith, pytest" 2>/dev/null || [ pyproject.toml -nt .venv/.tunesmith-installed ]; then
  echo "installing tunesmith and its dependencies ..."
  pip install --quiet -e ".[test]"
  touch .venv/.tunesmith-installed
fi
