# Diehl & Cook, 100 neurons, one full epoch, batch 32: seeds 0, 1, 2
export WT=${WT:-/work/wt-runs}   # git worktree add /work/wt-runs 2910788 (the commit these jobs started at)
for s in 0 1 2; do
  $(dirname "$0")/../chain.sh dc_epoch_b32_s$s experiment=diehl_cook_mnist seed=$s
done
  $(dirname "$0")/../chain.sh dc_epoch_b32_n400_s0 experiment=diehl_cook_mnist model.neurons=400 seed=0   # "400 neurons if the time allows"
