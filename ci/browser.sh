#!/bin/sh
# Headless Chromium and its WebDriver for the browser test (tests/test_explore.py), from Debian's packages;
# Selenium itself comes with the [test] extra. Idempotent: does nothing when both are installed.
set -eu
if [ -x /usr/bin/chromedriver ] && { command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; }; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
# the apt lock may be held by another installer for a while: retry a few times
for attempt in 1 2 3 4 5 6; do
    if $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; then
        exit 0
    fi
    echo "ci/browser.sh: apt-get install failed (attempt $attempt), retrying in 10 s" >&2
    sleep 10
done
exit 1
