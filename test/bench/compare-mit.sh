#!/usr/bin/env bash
# compare-mit.sh - MIT Kerberos's KDC, then Tessera's, back to back on this machine, into one
# log, then the side-by-side table (test/bench/compare.ts) of that one run:
#
#   bash test/bench/compare-mit.sh [LOG]
#
# MIT: ../shared/bench/mit/run-mit-bench.sh (MIT_BENCH=path to override) at c=16, one
# krb5kdc process, tgs and askt, REPS runs each (median). Tessera: `npm run bench -- kdc c=16`
# with BENCH_REPS runs of each base case, then the tgs-scale case(s) as configured.
# Every line carries bg_cpu_util (others' load, cores) so a busy window shows.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
log="${1:-$(mktemp -u "${TMPDIR:-/tmp}/tessera-vs-mit-XXXXXX.log")}"
mit="${MIT_BENCH:-$root/../shared/bench/mit/run-mit-bench.sh}"
[ -f "$mit" ] || { echo "no MIT baseline at $mit (set MIT_BENCH)" >&2; exit 2; }
: > "$log"
echo "# compare-mit: log $log" | tee -a "$log"
REPS="${REPS:-3}" CONCS=16 KDC_MODES=w1 MODES="tgs askt" N_TGS="${N_TGS:-8000}" N_ASKT="${N_ASKT:-5000}" NSVC=200 \
  bash "$mit" 2>&1 | grep -E '^(mit|#)' | tee -a "$log"
(cd "$root" && BENCH_REPS="${BENCH_REPS:-3}" npm run --silent bench -- kdc c=16 "$@" 2>&1 | tee -a "$log") || true
(cd "$root" && node --import tsx test/bench/compare.ts "$log")
