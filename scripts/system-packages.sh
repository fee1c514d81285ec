#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages kolm's build and tests need, when any is
# missing: cmake and clang/libclang (llama.cpp through llama-cpp-sys-2 and its
# bindgen), pkg-config, python3-venv (the OpenAI-client tests), curl (the
# demo), time (GNU time for the benchmarks' peak RSS). Idempotent and quiet
# when everything is there. Uses sudo when not root.
set -euo pipefail
packages=(cmake clang libclang-dev pkg-config python3-venv curl time)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
if ! command -v apt-get >/dev/null; then
    echo "system-packages.sh: error: missing ${missing[*]} and no apt-get here; install them with your package manager" >&2
    exit 1
fi
echo "installing system packages: ${missing[*]}"
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
