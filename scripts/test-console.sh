#!/usr/bin/env bash
# The web console in a real browser: installs Debian's chromium (if missing)
# and playwright-core (npm, pinned in tests/console/package-lock.json), builds
# the binary, and runs tests/console/console.test.mjs against a lab of real
# processes. Screenshots are kept in target/console/.
#
#   scripts/test-console.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
    echo "installing chromium (Debian)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if ! command -v node >/dev/null; then
    echo "installing Node.js (Debian)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
(cd tests/console && npm ci --no-audit --no-fund --silent)
cargo build --quiet -p meridian
CHROMIUM="$(command -v chromium)" node tests/console/console.test.mjs
