#!/usr/bin/env bash
# Instructions per happy-path call, counted exactly by callgrind (steadier than wall time on a
# shared machine): each stack of benches/bin/calls.rs runs N1 and N2 calls, and the difference
# in instructions over the difference in calls cancels setup and teardown.
#
#   bash scripts/instructions.sh [stack ...]     (default: bare preset preset-observed tower)
#
# Needs valgrind. Builds the binary in release mode with debug info off (the workspace's
# release profile).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed" >&2; exit 2; }
stacks=("$@")
[ ${#stacks[@]} -gt 0 ] || stacks=(bare preset preset-observed tower)
cargo build --release --locked -p palisade-benches --bin calls >&2
bin="${CARGO_TARGET_DIR:-target}/release/calls"
n1=20000
n2=120000
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
instructions() {
  valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$bin" "$1" "$2" >/dev/null 2>"$tmp/log"
  grep -E '^summary:|^totals:' "$tmp/out" | head -1 | awk '{print $2}'
}
printf '%-16s %s\n' stack instructions/call
for s in "${stacks[@]}"; do
  a=$(instructions "$s" "$n1")
  b=$(instructions "$s" "$n2")
  awk -v s="$s" -v a="$a" -v b="$b" -v n1="$n1" -v n2="$n2" 'BEGIN { printf "%-16s %.0f\n", s, (b - a) / (n2 - n1) }'
done
