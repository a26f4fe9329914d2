#!/usr/bin/env bash
# chain.sh NAME overrides...: one training job in $RUNS/jobs/NAME, from the source tree $WT (a worktree fixed at a
# commit), one thread, nice 10. A finished job (results.json there) is skipped; a stopped one resumes from its
# last.ckpt (learnbench.train does that for a re-run with the same overrides in the same folder).
set -u
RUNS=${RUNS:-/work/runs}; PY=${PY:-/work/main/.venv/bin/python}; DATA=${DATA:-/work/shared/datasets}
name=$1; shift
dir=$RUNS/jobs/$name
if [ -f "$dir/results.json" ]; then echo "skip $name (finished)"; exit 0; fi
mkdir -p "$dir"
echo "$(date -u +%H:%M:%S) start $name $*"
cd "$WT" && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_MODE=offline PYTHONPATH=$WT/src nice -n 10 \
  "$PY" -m learnbench.train "$@" paths.data_dir="$DATA" logger=csv +trainer.enable_progress_bar=false \
  hydra.run.dir="$dir" >> "$dir/stdout.log" 2>&1
echo "$(date -u +%H:%M:%S) end $name rc=$?"
