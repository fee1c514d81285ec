#!/usr/bin/env bash
# Type-checks and lints kolm-train with its `metal` feature for Apple
# silicon (aarch64-apple-darwin) from Linux, so the Metal-only code compiles
# even where no Mac is. The library only: its tests and kolmctl link
# llama.cpp, which needs the macOS SDK. Installs the target's standard
# library with rustup once; where that cannot be done (no rustup, offline)
# it says so and skips, since nothing else here depends on it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-apple-darwin
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    if ! rustup target add "$target" >/dev/null 2>&1; then
        echo "check-metal.sh: WARNING: skipped: cannot install the $target standard library (rustup target add $target)" >&2
        exit 0
    fi
fi
cargo clippy --quiet --target "$target" -p kolm-train --features metal --lib -- -D warnings
echo "check-metal.sh: kolm-train --features metal type-checks and lints for $target"
