#!/usr/bin/env bash
# The whole test suite (what CI runs, via .ci/run): installs what it needs,
# starts Open vSwitch, checks formatting and lints, builds, and runs every
# unit, property, integration and end-to-end test. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never
# A one-shot build gains nothing from incremental caches (5 GB of them).
export CARGO_INCREMENTAL=0
start=$(date +%s)
step() { printf '\n=== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "disk"
df -h . "${CARGO_TARGET_DIR:-target}" 2>/dev/null || df -h .
step "dependencies"
scripts/install-deps.sh
step "Open vSwitch"
ovs-scripts/start-ovs.sh

step "format"
cargo fmt --all -- --check
step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "build"
cargo build --workspace --bins --locked
for s in hostd/guest/build.sh; do
  if [ -x "$s" ]; then step "test guest"; "$s"; fi
done
step "tests"
cargo test --workspace --locked --no-fail-fast -- --test-threads=2
if [ -x controller/ofp/fuzz/check-build.sh ]; then
  step "fuzz target builds"
  controller/ofp/fuzz/check-build.sh
fi
step "disk used by the build"
du -sh "${CARGO_TARGET_DIR:-target}" 2>/dev/null || true
step "all tests passed"
