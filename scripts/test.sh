#!/usr/bin/env bash
# Runs every check kolm has: formatting, clippy, and all tests (unit,
# integration, end-to-end, doc tests) on the real model files.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fixtures.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
cargo test --workspace --doc --quiet
