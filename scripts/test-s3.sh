#!/usr/bin/env bash
# The S3 backup path against a real S3-compatible server: moto's server mode,
# installed from PyPI if missing, started by the test on a loopback port.
#
#   scripts/test-s3.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v moto_server >/dev/null; then
    echo "installing moto's S3 server (PyPI: moto[server])"
    python3 -m pip install --quiet 'moto[server]'
fi
cargo clippy -p meridian-dr --features s3 --all-targets -- -D warnings
cargo test -p meridian-dr --features s3 --test s3
