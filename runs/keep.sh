#!/usr/bin/env bash
# keep.sh: copy what the long runs need to outlive this machine into the repository (runs/jobs/<name>/): each job's
# record (results.json, csv/metrics.csv, .hydra/overrides.yaml, train.log) and, for a job still running or stopped,
# its checkpoints/last.ckpt, which restore.sh puts back so that chain.sh resumes it on the next machine.
set -eu
RUNS=${RUNS:-/work/runs}; here=$(cd "$(dirname "$0")" && pwd)
for dir in "$RUNS"/jobs/*/; do
  name=$(basename "$dir"); out=$here/jobs/$name
  mkdir -p "$out"
  for f in results.json csv/metrics.csv .hydra/overrides.yaml train.log; do
    [ -f "$dir/$f" ] && mkdir -p "$out/$(dirname "$f")" && cp "$dir/$f" "$out/$f"
  done
  if [ -f "$dir/results.json" ]; then rm -rf "$out/checkpoints"
  elif [ -f "$dir/checkpoints/last.ckpt" ]; then mkdir -p "$out/checkpoints" && cp "$dir/checkpoints/last.ckpt" "$out/checkpoints/"; fi
done
du -sh "$here/jobs"
