#!/usr/bin/env bash
# Mutation smoke job (on demand, not in CI): plants each bug of tests/mutation/mutants.py in a
# temporary copy of the tree, builds the copy into its own folder, runs the suite against it
# and prints which mutants survive. See docs/testing.md.
#   tests/mutation/run.sh                     # every mutant, the working tree
#   tests/mutation/run.sh --only raster-self  # one mutant
#   tests/mutation/run.sh --list              # the mutants, and any stale snippets
#   tests/mutation/run.sh --quick             # only each mutant's hint tests
#   tests/mutation/run.sh --ref HEAD          # plant into a commit instead of the working tree
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-1}"
exec nice -n 19 python "$here/runner.py" "$@"
