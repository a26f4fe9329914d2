# evidence accumulation, the other rules on Bellec's network at its budget (at most 2,000 iterations, stopped below 7 %
# validation error), seed 0, the rate penalty off for every row (np, wp, fg_a, fg_w have no gradient of it; bp and
# e-prop re-run without it for equal terms); each rule's alignment with BPTT every 20 iterations
export WT=${WT:-/work/wt-rules}   # git worktree add /work/wt-rules 8742e1a (fg_w and fg_a with the tangent written out)
for m in fg_a np wp fg_w bp eprop; do
  $(dirname "$0")/../chain.sh ea_rules_${m}_s0 experiment=evidence_accumulation model.rate_penalty=0 method=$m seed=0 \
    diagnostics.every_n_steps=20
done
