#!/usr/bin/env bash
# Checks that the cargo-fuzz target builds (CI calls this; no fuzzing run).
# Uses the stable toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes
# nightly-only -Z flags) and no sanitizer. Installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
RUSTC_BOOTSTRAP=1 cargo fuzz build -s none decode
# Smoke run over the seed corpus only (no new inputs): catches a target
# that panics on the committed seeds.
RUSTC_BOOTSTRAP=1 cargo fuzz run -s none decode corpus/decode -- -runs=0
echo "fuzz target OK"
