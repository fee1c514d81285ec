#!/usr/bin/env bash
# Runs every check kolm has: formatting, clippy, and all tests (doc tests,
# unit, integration and end-to-end tests) on the real model files.
set -euo pipefail
cd "$(dirname "$0")/.."
# Incremental caches only pay off on repeated local edits; on a cold run they
# add gigabytes of disk and nothing else.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

scripts/system-packages.sh
scripts/fixtures.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
scripts/check-metal.sh
cargo test --workspace --doc --quiet
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
