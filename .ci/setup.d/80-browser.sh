#!/usr/bin/env bash
# The dashboard's tests: Debian's Chromium and its chromedriver, Selenium in the project's venv
# (also a test extra in pyproject.toml), and docker-registry (registry v2) for the registry
# panel. Install only: the tests start the browser and the registry themselves, the browser
# always headless and with every phone-home feature switched off.
set -euo pipefail
cd "$(dirname "$0")/../.."
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
.venv/bin/python -c 'import selenium' 2>/dev/null || .venv/bin/pip install -q 'selenium>=4.20'
/usr/bin/chromium --version
