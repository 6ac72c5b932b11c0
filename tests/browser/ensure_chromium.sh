#!/usr/bin/env bash
# Install Debian's chromium for the browser tests if it is missing (idempotent; needs root or sudo).
# Playwright drives this system browser through executable_path: `playwright install` cannot download
# browsers on machines that only reach package registries.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk >/dev/null
/usr/bin/chromium --version
