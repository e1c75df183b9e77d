#!/usr/bin/env bash
# The dashboard's browser tests: Debian's Chromium and its chromedriver, and Selenium in the
# project's venv (also a test extra in pyproject.toml). Install only: the tests start the
# browser themselves, always headless and with every phone-home feature switched off.
set -euo pipefail
cd "$(dirname "$0")/../.."
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
.venv/bin/python -c 'import selenium' 2>/dev/null || .venv/bin/pip install -q 'selenium>=4.20'
/usr/bin/chromium --version
