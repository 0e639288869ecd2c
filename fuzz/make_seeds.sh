#!/usr/bin/env bash
# Builds the seed corpora fuzz/corpus/<target>/ from the real files in the shared data
# (tok512.bin, TinyStories valid.txt) and the repository's configs/*.toml; see README.md.
# Usage: fuzz/make_seeds.sh [shared data dir]   (default: ../shared/data beside the repository)
# Uses the `make_seeds` binary of the fuzz build (`cargo fuzz build` builds it with the targets).
set -euo pipefail
cd "$(dirname "$0")"
# The instrumented build always lives in fuzz/target (a CARGO_TARGET_DIR meant for the main
# workspace would move it where make_seeds.sh and cargo fuzz do not look).
unset CARGO_TARGET_DIR
shared=${1:-../../shared/data}
[ -d "$shared" ] || { echo "make_seeds.sh: no shared data at $shared" >&2; exit 1; }
RUSTC_BOOTSTRAP=1 cargo fuzz build >/dev/null
target/x86_64-unknown-linux-gnu/release/make_seeds "$shared" ../configs corpus
