#!/usr/bin/env bash
# Creates (once) the virtualenv of Python reference implementations that
# benchmarks and reference-value scripts compare kolm against: PyTorch (CPU),
# transformers, peft, sentence-transformers, gguf, numpy. Not used by CI.
#
# Venv: $KOLM_PYREF_VENV, else ~/.cache/kolm/pyref-venv (outside target/ so a
# `cargo clean` keeps the multi-gigabyte install). Idempotent: a venv that
# already imports every package is left alone. Prints the venv's python last.
set -euo pipefail
venv="${KOLM_PYREF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kolm/pyref-venv}"
python="$venv/bin/python"
check='import torch, transformers, peft, sentence_transformers, gguf, numpy'
if [ -x "$python" ] && "$python" -c "$check" 2>/dev/null; then
    echo "$python"
    exit 0
fi
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv" >&2
"$python" -m pip install --quiet --upgrade pip >&2 || true
echo "pyref-venv.sh: installing torch, transformers, peft, sentence-transformers, gguf (several GB, once)..." >&2
"$python" -m pip install --quiet torch 'transformers>=4.45' peft sentence-transformers gguf numpy >&2
"$python" -c "$check" >&2
echo "$python"
