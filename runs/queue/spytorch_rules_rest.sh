# spytorch Fashion-MNIST at the published 30 epochs, the rest of the rules, seed 0 (dfa and fa: spytorch_rules.sh)
for m in np wp stdp rstdp; do
  WT=${WT_RUNS:-/work/wt-runs} $(dirname "$0")/../chain.sh spytorch30_${m}_s0 experiment=spytorch_fashion_mnist method=$m seed=0   # worktree at 2910788
done
for m in fg_a fg_w; do   # from 8742e1a on, the tangent written out: 3-4x faster, the same numbers (tests/test_snn_rules.py)
  WT=${WT_RULES:-/work/wt-rules} $(dirname "$0")/../chain.sh spytorch30_${m}_s0 experiment=spytorch_fashion_mnist method=$m seed=0
done
