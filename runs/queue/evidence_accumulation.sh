# evidence accumulation: seeds 1, 2 of bp and symmetric e-prop, then random e-prop seeds 0, 1, 2
export WT=${WT:-/work/wt-runs}   # git worktree add /work/wt-runs 2910788 (the commit these jobs started at)
for s in 1 2; do
  $(dirname "$0")/../chain.sh ea2_bp_s$s experiment=evidence_accumulation method=bp seed=$s
  $(dirname "$0")/../chain.sh ea2_eprop_s$s experiment=evidence_accumulation seed=$s diagnostics.every_n_steps=10
done
for s in 0 1 2; do
  $(dirname "$0")/../chain.sh ea2_eprop_random_s$s experiment=evidence_accumulation method.feedback=random seed=$s diagnostics.every_n_steps=10
done
