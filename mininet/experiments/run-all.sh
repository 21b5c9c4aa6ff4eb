#!/usr/bin/env bash
# Every experiment of docs/experiments.md on the Mininet testbed, one after
# the other, then their numbers into docs/experiments.md (between the
# results markers; the prose stays as it is).
#
#   sudo mininet/experiments/run-all.sh [--bin-dir DIR] [--out DIR] [--no-doc]
#
# Without --bin-dir the release binaries are used (built first when
# missing). Each experiment holds the end-to-end lock (/tmp/shoal-e2e.lock),
# as the test suite does, so it never shares the machine's Open vSwitch with
# another testbed. Results: OUT/<experiment>/summary.json and plots.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN_DIR=""
OUT="$ROOT/out"
DOC=1
PY=/usr/bin/python3
LOCK=/tmp/shoal-e2e.lock

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) BIN_DIR="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --no-doc) DOC=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run-all.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "run-all.sh: the testbed needs root" >&2
    exit 1
fi
if [ -z "$BIN_DIR" ]; then
    BIN_DIR="$ROOT/target/release"
    if [ ! -x "$BIN_DIR/shoal-controller" ] || [ ! -x "$BIN_DIR/shoal-hostd" ]; then
        echo "== building the release binaries"
        (cd "$ROOT" && cargo build --release -p shoal-controller -p shoal-hostd)
    fi
fi
for b in shoal-controller shoal-hostd; do
    if [ ! -x "$BIN_DIR/$b" ]; then
        echo "run-all.sh: $BIN_DIR/$b missing" >&2
        exit 1
    fi
done
BIN_DIR="$(cd "$BIN_DIR" && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

run() {
    local name="$1"; shift
    local t0=$SECONDS
    echo "== $name ($(date -u +%H:%M:%S))"
    flock "$LOCK" "$PY" "$ROOT/mininet/experiments/$1" --out "$OUT/$name" \
        --bin-dir "$BIN_DIR" "${@:2}" 2>&1 | tee "$OUT/$name.log"
    echo "== $name: $((SECONDS - t0)) s"
}

cd "$ROOT"
# What the results table names: the commit and the date of this run.
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    COMMIT="$COMMIT + local changes"
fi
printf '{"commit": "%s", "date": "%s"}\n' "$COMMIT" "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    > "$OUT/run-info.json"
run vmpatrol vmpatrol.py
run hotspot-idc hotspot.py --policy idc
run hotspot-sandpiper hotspot.py --policy sandpiper
run sova sova.py
run score score.py
run violin violin.py
run shoal shoal.py

if [ "$DOC" = 1 ]; then
    "$PY" "$ROOT/mininet/experiments/results.py" --out "$OUT" --doc "$ROOT/docs/experiments.md"
fi
echo "results: $OUT"
