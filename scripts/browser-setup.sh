# Sourced by scripts/test.sh: Debian's Chromium for the browser tests (tests/ui), installed when
# missing. Playwright cannot download its own browser here, so it drives this one. Where it cannot
# be installed (no root, no package index), the browser tests skip and say why.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing chromium for the browser tests ..."
  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
    || echo "could not install chromium: the browser tests will be skipped"
fi
