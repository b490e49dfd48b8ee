#!/usr/bin/env bash
# Builds every program of the Go lifecycle suite into bin/<NN-scenario>-<program>: the good
# and bad variant of each scenario, and helpers such as 05's checker. Those are the paths
# the experiment files run. Called by the end-to-end tests and CI; needs only `go` (1.19+).
set -euo pipefail
cd "$(dirname "$0")"

# `go build` needs a cache directory; a CI sandbox may have no HOME.
if [[ -z "${GOCACHE:-}" && -z "${XDG_CACHE_HOME:-}" && -z "${HOME:-}" ]]; then
  export GOCACHE="${TMPDIR:-/tmp}/atropos-go-lifecycle-gocache"
fi
# Standard library only: never reach for the network.
export GOPROXY=off

mkdir -p bin
for scenario in [0-9][0-9]-*/; do
  scenario="${scenario%/}"
  for program in "${scenario}"/*/; do
    program="$(basename "${program}")"
    go build -trimpath -o "bin/${scenario}-${program}" "./${scenario}/${program}"
  done
done
