#!/usr/bin/env bash
# restore.sh: on a new machine, put the kept jobs (runs/jobs/<name>/) back where chain.sh runs them ($RUNS/jobs), so
# that finished jobs are skipped and stopped ones resume from their checkpoint.
set -eu
RUNS=${RUNS:-/work/runs}; here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$RUNS/jobs"
cp -rn "$here"/jobs/* "$RUNS/jobs/" 2>/dev/null || true
ls "$RUNS/jobs"
