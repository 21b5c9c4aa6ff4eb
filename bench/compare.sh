#!/usr/bin/env bash
# Shoal vs. Faucet on the ofswarm switch emulator; rewrites
# docs/performance.md. Run as root on a Debian 12 machine with Rust:
#
#   sudo bench/compare.sh               # everything
#   sudo bench/compare.sh --only stats     # only the statistics polling runs
#                                          # (Shoal vs. Gauge), spliced into
#                                          # the existing doc
#   sudo bench/compare.sh --only topology  # only discovery, memory and churn
#                                          # (Shoal), spliced likewise
#   sudo bench/compare.sh --only liveloop  # only the live loop at 10,000 VMs
#                                          # (bench/liveloop.sh), spliced likewise
#
# 1. installs python3-venv if missing and makes a virtualenv with Faucet
#    (a peer to measure against, never a dependency of Shoal) under
#    target/bench-venv (override: BENCH_VENV=DIR);
# 2. builds release ofswarm and shoal-controller (--locked);
# 3. runs bench/compare.py: each controller in turn against ofswarm
#    (controller on CPU 0, ofswarm on CPU 1), then writes the doc.
# Logs and JSON results: target/bench-compare/.
set -euo pipefail

FAUCET_SPEC='faucet==1.10.*'
PY=/usr/bin/python3

die() { echo "compare.sh: error: $*" >&2; exit 1; }
say() { echo "compare.sh: $*"; }

only=all
while [[ $# -gt 0 ]]; do
    case $1 in
        --only)
            [[ $# -ge 2 && ( $2 == all || $2 == stats || $2 == topology || $2 == liveloop ) ]] ||
                die "--only takes 'all', 'stats', 'topology' or 'liveloop'"
            only=$2
            shift 2
            ;;
        *) die "unknown argument '$1' (usage: bench/compare.sh [--only all|stats|topology|liveloop])" ;;
    esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ -f "$root/Cargo.toml" && -f "$root/bench/ofswarm/Cargo.toml" && -f "$root/bench/compare.py" ]] ||
    die "run from the Shoal repository (bench/compare.sh not found under $root)"
cd "$root"

[[ $(id -u) -eq 0 ]] || die "run as root (sudo bench/compare.sh): it may apt-get install python3-venv"
[[ -x $PY ]] || die "$PY not found (apt-get install python3)"
command -v cargo >/dev/null || die "cargo not found (install Rust, e.g. rustup)"
command -v taskset >/dev/null || die "taskset not found (apt-get install util-linux)"
ncpu=$(nproc)
[[ $ncpu =~ ^[0-9]+$ && $ncpu -ge 2 ]] || die "needs at least 2 CPUs (nproc says '$ncpu')"

venv=${BENCH_VENV:-$root/target/bench-venv}
[[ -n $venv && $venv != / ]] || die "BENCH_VENV must name a directory"
work=$root/target/bench-compare
out=$root/docs/performance.md

helper_pid=
cleanup() {
    local rc=$?
    # Only the helper this script started; it stops its own children.
    if [[ -n $helper_pid ]] && kill -0 "$helper_pid" 2>/dev/null; then
        kill -TERM "$helper_pid" 2>/dev/null || true
        wait "$helper_pid" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. Faucet in a virtualenv.
if ! $PY -c 'import venv, ensurepip' 2>/dev/null; then
    say "installing python3-venv"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
fi
if [[ ! -x $venv/bin/faucet ]]; then
    say "creating $venv with $FAUCET_SPEC"
    $PY -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "$FAUCET_SPEC" ||
        die "pip install $FAUCET_SPEC failed"
fi
faucet_version=$("$venv/bin/faucet" --version 2>/dev/null | tail -n 1) ||
    die "$venv/bin/faucet does not run"
[[ $faucet_version =~ ^Faucet\ 1\.10\. ]] ||
    die "expected Faucet 1.10.x in $venv, found '$faucet_version' (remove $venv to reinstall)"
say "$faucet_version"

# 2. Release build.
say "building ofswarm and shoal-controller (release)"
cargo build --release --locked -p ofswarm -p shoal-controller
target_dir=$(cargo metadata --format-version 1 --no-deps | $PY -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
ofswarm=$target_dir/release/ofswarm
shoal=$target_dir/release/shoal-controller
[[ -x $ofswarm && -x $shoal ]] || die "release binaries missing under $target_dir/release"

# 3. Measurements and the doc (the live loop in step 4).
if [[ $only != liveloop ]]; then
    $PY "$root/bench/compare.py" --ofswarm "$ofswarm" --shoal "$shoal" \
        --venv "$venv" --work "$work" --out "$out" --only "$only" &
    helper_pid=$!
    if wait "$helper_pid"; then
        helper_pid=
    else
        rc=$?
        helper_pid=
        die "the measurements failed (status $rc); see the messages above and $work/"
    fi
fi

# 4. The live loop at 10,000 VMs (Shoal only; its own section of the doc).
if [[ $only == all || $only == liveloop ]]; then
    say "live loop: bench/liveloop.sh --write-doc"
    JOBS=$ncpu "$root/bench/liveloop.sh" --write-doc || die "bench/liveloop.sh failed"
fi
say "done: $out"
