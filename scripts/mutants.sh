#!/usr/bin/env bash
# Mutation testing with cargo-mutants: which behaviours no test pins.
#
#   bash scripts/mutants.sh palisade-breaker            one crate
#   bash scripts/mutants.sh palisade-breaker src/state.rs   one file of it
#   bash scripts/mutants.sh all                         every library crate, one after another
#
# Installs cargo-mutants (pinned, --locked) when it is missing. Results go to
# mutants.out/<crate>/ (outcomes.json, caught.txt, missed.txt, timeout.txt, unviable.txt);
# exclusions of truly equivalent mutants, each with its reason, are in .cargo/mutants.toml.
# The score TESTING.md quotes is (caught + timeouts) / (caught + timeouts + missed).
# One job at a time. With `-j 2` or more, leave CARGO_TARGET_DIR unset: jobs that share one
# target directory overwrite each other's test binaries and report mutants they never tested.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --version 27.1.0 --locked
crates=(palisade-core palisade-test palisade-timeout palisade-retry palisade-breaker palisade-fallback
        palisade-route palisade-chaos palisade-http palisade-durable palisade palisade-sim)
target="${1:-}"
[ -n "$target" ] || { sed -n '2,12p' "$0"; exit 2; }
if [ "$target" = all ]; then set -- "${crates[@]}"; else set -- "$target"; fi
file="${2:-}"
for crate in "$@"; do
  args=(-p "$crate" --timeout 60 -o "mutants.out/$crate")
  [ -z "$file" ] || args+=(--file "crates/$crate/$file")
  cargo mutants "${args[@]}" || true   # a missed mutant is a finding, not a failure of the script
  out="mutants.out/$crate/mutants.out"
  caught=$(wc -l < "$out/caught.txt"); missed=$(wc -l < "$out/missed.txt")
  timeout=$(wc -l < "$out/timeout.txt"); unviable=$(wc -l < "$out/unviable.txt")
  awk -v c="$crate" -v k="$caught" -v m="$missed" -v t="$timeout" -v u="$unviable" 'BEGIN {
    v = k + m + t; printf "%s: %d caught, %d timeouts, %d missed, %d unviable: %.1f %% of viable caught\n",
      c, k, t, m, u, v ? 100 * (k + t) / v : 100 }'
done
