#!/usr/bin/env bash
# Mutation tests (cargo-mutants) of the security-critical code a change touches.
#
#   scripts/mutants-diff.sh [BASE]     BASE defaults to HEAD~1: the last commit is the change
#
# Every mutant of a changed line in the modules below must be caught by a test; a missed one
# fails (exit 2, cargo-mutants' own code), and the list is in mutants.out/missed.txt. Nothing
# to do, and nothing installed, when the change touches none of them. Runs in place, so the
# build the test suite left behind is reused and each mutant rebuilds one crate.
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:-HEAD~1}"

security=(
  proto/src/envelope.rs proto/src/keys.rs proto/src/audit_chain.rs proto/src/fleet.rs
  proto/policy/src/admission
  agent/src/admission agent/src/audit agent/src/artifact/unpack
  agent/src/server/throttle.rs agent/src/server/tls.rs agent/src/server/handshake.rs
  agent/src/server/revocation.rs agent/src/server/oversize.rs
)
diff=$(mktemp)
trap 'rm -f "$diff"' EXIT
# Test code is not mutated: leave test files out of the diff.
git diff --unified=0 "$base" -- "${security[@]}" \
  ':(exclude)*tests.rs' ':(exclude)*/tests/*' ':(exclude)*_tests.rs' > "$diff"
if [ ! -s "$diff" ]; then
  echo "no security-critical source changed since $base: nothing to mutate"
  exit 0
fi
echo "security-critical files changed since $base:"
grep '^+++ ' "$diff" | sed 's|^+++ b/|  |'
command -v cargo-mutants >/dev/null || cargo install --locked --quiet cargo-mutants
cargo mutants --in-place --in-diff "$diff" --timeout 300 --no-shuffle
