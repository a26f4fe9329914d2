# spytorch Fashion-MNIST at the published 30 epochs: the other rules, seed 0
export WT=${WT:-/work/wt-runs}   # git worktree add /work/wt-runs 2910788 (the commit these jobs started at)
for m in dfa fa; do   # np, wp: spytorch_rules_rest.sh
  $(dirname "$0")/../chain.sh spytorch30_${m}_s0 experiment=spytorch_fashion_mnist method=$m seed=0
done
