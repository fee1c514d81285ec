#!/usr/bin/env bash
# Creates (once) the virtualenv the OpenAI-client tests run in:
# target/openai-venv with the `openai`, `pytest` and `jsonschema` packages.
# Idempotent: a venv that already imports them is left alone. Prints the
# venv's python path last.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${KOLM_OPENAI_VENV:-${CARGO_TARGET_DIR:-target}/openai-venv}"
python="$venv/bin/python"
if [ -x "$python" ] && "$python" -c 'import openai, pytest, jsonschema' 2>/dev/null; then
    echo "$python"
    exit 0
fi
python3 -m venv "$venv" >&2
"$python" -m pip install --quiet --upgrade pip >&2 || true
"$python" -m pip install --quiet 'openai>=1.40' 'pytest>=8' 'jsonschema>=4' >&2
"$python" -c 'import openai, pytest, jsonschema' >&2
echo "$python"
