#!/usr/bin/env bash
# Headless Chromium + chromedriver for tests/test_server.py::test_demo_page_in_headless_chromium
# (Selenium drives /usr/bin/chromium through /usr/bin/chromedriver; no driver download).
# Debian/Ubuntu runners; needs root (or sudo). The test skips, saying so, where chromium is absent.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium chromium-driver
