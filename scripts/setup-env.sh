# Sourced by the other scripts and .ci/run: create .venv, install torch==2.13.0 first (the CPU build
# here), then tunesmith with every extra and the test tools at the exact versions of constraints.txt
# (./scripts/lock.sh refreshes that file). Idempotent and quiet when everything is already there.
# Optional, for the container images (docker/); unset, nothing changes:
#   TUNESMITH_EXTRAS           the extras to install (default all,test; the images: all)
#   TUNESMITH_TORCH            the torch 2.13.0 to install: a requirement or a wheel's path
#                              (default torch==2.13.0)
#   TUNESMITH_TORCH_INDEX_URL  the index torch comes from (pip --index-url), e.g.
#                              https://download.pytorch.org/whl/cpu; default: pip's own settings
set -euo pipefail
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
source .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first: a bare `torch` requirement would pull the newest CUDA build (several GB).
if ! python -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  echo "installing torch==2.13.0 ..."
  pip install --quiet ${TUNESMITH_TORCH_INDEX_URL:+--index-url "$TUNESMITH_TORCH_INDEX_URL"} \
    "${TUNESMITH_TORCH:-torch==2.13.0}"
fi
# all: every optional feature (the server, search, PostgreSQL, W&B), which the quickstart and the
# tests use; test: pytest, the browser tests' playwright, ruff and import-linter.
# (The script is sourced: its own variables are _ts_*, unset at the end.)
_ts_extras=${TUNESMITH_EXTRAS:-all,test}
case ",$_ts_extras," in
  *,test,*) _ts_check='import tunesmith, pytest, importlinter' _ts_ruff=ruff ;;
  *) _ts_check='import tunesmith' _ts_ruff=true ;;  # no test tools to look for
esac
if ! python -c "$_ts_check" 2>/dev/null || ! command -v "$_ts_ruff" >/dev/null \
    || [ pyproject.toml -nt .venv/.tunesmith-installed ] || [ constraints.txt -nt .venv/.tunesmith-installed ]; then
  echo "installing tunesmith and its dependencies (constraints.txt) ..."
  pip install --quiet -c constraints.txt -e ".[$_ts_extras]"
  touch .venv/.tunesmith-installed
fi
unset _ts_extras _ts_check _ts_ruff
