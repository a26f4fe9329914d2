# spytorch Fashion-MNIST at the published 30 epochs: np and wp, seed 0 (after dfa and fa: spytorch_rules.sh)
export WT=${WT:-/work/wt-runs}   # git worktree add /work/wt-runs 2910788
for m in np wp; do
  $(dirname "$0")/../chain.sh spytorch30_${m}_s0 experiment=spytorch_fashion_mnist method=$m seed=0
done
