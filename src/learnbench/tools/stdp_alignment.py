"""STDP against a gradient, and R-STDP against node perturbation, on one small spiking network (docs/locality.md).

    python -m learnbench.tools.stdp_alignment align [--batches 20] [--seed 0] [--json out.json]
    python -m learnbench.tools.stdp_alignment race  [--seeds 0 1 2] [--epochs 1] [--json out.json]
    python -m learnbench.tools.stdp_alignment table --align-json a0.json a1.json a2.json --race-json race.json

The network and the data (the same for every rule): MNIST digits 0, 1, 2 (data.dir: /work/shared/datasets by
default), 2x2-average-pooled to 14 x 14 = 196 inputs in [0, 1], rate-coded (model.encoding=rate, 200 Hz, 30 steps of
1 ms); one layer of 50 LIF units (tau_mem 10 ms, threshold 1, subtract reset, fast-sigmoid surrogate), a LIF
membrane readout with 3 outputs, the sum-over-steps cross entropy. W_1 (input -> hidden) starts non-negative,
U(0, 0.08) (STDP's bounds keep W_1 >= 0; every rule starts from the same W_1).

`align`: on `--batches` batches of 64 training examples, every rule's update of W_1 (the only weight the STDP rules
learn) from the same input spikes and the same weights, against the surrogate gradient of the loss (bp: surrogate
BPTT, the reference, cosine 1 by construction). Two figures per rule: the mean over batches of the per-batch cosine
between -(its p.grad) and -dL/dW_1, and the cosine between the batch-averaged update and the batch-averaged gradient
(what the rule does in expectation). np: node perturbation on W_1 (Gaussian noise of std `--sigma` on the first
layer's input currents, per example, step and unit; the estimate (L(noisy) - L(clean)) / sigma^2 sum_t xi_t x_t^T);
written out here (from before method=np trained spiking networks; it does now). fa and dfa now train feed-forward
SNNs too; this tool compares e-prop with random feedback (the error through fixed random B).

`race`: R-STDP (method=rstdp, reward=correct against its running baseline) and node perturbation train W_1 on the
same network and task, with the same budget (`--epochs` passes over `--train` examples, batches of 32); the readout
learns by its own gradient in both (method.readout=gradient; SGD, lr 0.05), and a control trains the readout alone
(W_1 fixed). Each rule's learning rate is the best of a 3-value grid (rstdp 1e-3, 1e-2, 0.1; np 1e-4, 1e-3, 1e-2) on seed 0's validation split (the last 500
training examples); reported: test accuracy (600 test examples), the variance of the update (mean over batches of
||dW - mean dW||^2 / ||mean dW||^2 over 8 noise draws on one batch) and its alignment with the surrogate gradient.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from learnbench.catalog import rule_from_config
from learnbench.models import SNN
from learnbench.models.snn import run_layer
from learnbench.tasks import get_task
from learnbench.training_loop import train_batch

LOSS_TASK = get_task("sum_over_steps_classification")
CLASSES = (0, 1, 2)
INPUTS, HIDDEN, STEPS = 196, 50, 30
W1_MAX_INIT = 0.08


# ============================================================================= data and network
def read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def digits(data_dir: Path, split: str, limit: int) -> tuple[Tensor, Tensor]:
    """The first `limit` images of CLASSES in the split, pooled to 14 x 14 and flattened, in [0, 1]; labels 0..2."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(data_dir / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte")
    labels = read_idx(data_dir / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte")
    keep = np.flatnonzero(np.isin(labels, CLASSES))[:limit]
    x = torch.from_numpy(images[keep].astype(np.float32) / 255.0)
    x = torch.nn.functional.avg_pool2d(x[:, None], 2).flatten(1)
    return x, torch.from_numpy(labels[keep].astype(np.int64))


def network(seed: int) -> SNN:
    torch.manual_seed(seed)
    model = SNN(INPUTS, len(CLASSES), hidden_sizes=[HIDDEN], encoding="rate", steps=STEPS, dt=1.0, max_rate=200.0,
                tau_mem=10.0, encoding_seed=seed)
    with torch.no_grad():
        model.hidden[0].weight.uniform_(0.0, W1_MAX_INIT)
    return model


# ============================================================================= node perturbation on W_1
def node_perturbation_grad(model: SNN, pre: Tensor, y: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """NP's estimate of dL/dW_1 from the input spikes `pre` [batch, steps, inputs]: noise xi of std sigma on every
    example's, step's and unit's input current; (L_b(noisy) - L_b(clean)) / sigma^2 sum_t xi_b,t x_b,t^T, mean over b."""
    with torch.no_grad():
        currents = model.hidden[0](pre)
        noise = sigma * torch.randn(currents.shape, generator=generator, dtype=currents.dtype)
        clean, noisy = (per_example_loss(model, c, y) for c in (currents, currents + noise))
        scale = (noisy - clean) / sigma ** 2
        return torch.einsum("b,bti,btj->ij", scale, noise, pre) / len(y)


def per_example_loss(model: SNN, currents: Tensor, y: Tensor) -> Tensor:
    spikes = run_layer(model.neuron, currents, model.initial_state(len(y)).hidden[0])[0]
    return LOSS_TASK.loss(model.output_from(spikes), y)


# ============================================================================= one update of W_1 per rule
RULES = {  # name -> (method, options)
    "bp": ("bp", {}),
    "eprop (symmetric)": ("eprop", {}),
    "eprop (random B, fa's analogue)": ("eprop", {"feedback": "random"}),
    "stdp": ("stdp", {}),
    "rstdp": ("rstdp", {"baseline_decay": 0.0}),  # its baseline: the mean reward of a first call on the batch
    "stdp_gradient": ("stdp_gradient", {}),
}


def w1_update(name: str, model: SNN, x: Tensor, y: Tensor, calls: int, sigma: float, seed: int) -> Tensor:
    """The rule's p.grad of W_1 (descent convention: compare with dL/dW_1), the input spikes those of encoding call
    `calls` for every rule (the rate code's draws are reset to it)."""
    model.encoding_calls.fill_(calls)
    w = model.hidden[0].weight
    if name == "np":
        pre = model.encode(x)
        return node_perturbation_grad(model, pre, y, sigma, torch.Generator().manual_seed(seed * 100_003 + calls))
    method, options = RULES[name]
    rule = rule_from_config(method, **options)
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    rule.setup(model, seed=seed, rank=0, device=torch.device("cpu"))
    rule.begin_step(calls)
    if method == "rstdp":  # the baseline a running mean would hold: this batch's mean reward, from other spikes
        model.encoding_calls.fill_(calls + 1_000_000)
        rule.estimate_grads(model, x, y, LOSS_TASK.loss)
        model.encoding_calls.fill_(calls)
    for p in model.parameters():
        p.grad = None
    rule.estimate_grads(model, x, y, LOSS_TASK.loss)
    grad = w.grad.detach().clone()
    for n, p in model.named_parameters():  # the STDP rules fix the rest of the network: undo it for the next rule
        p.requires_grad_(saved[n])
        p.grad = None
    return grad


def cosine(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def align(args) -> dict:
    x_all, y_all = digits(args.data_dir, "train", args.batches * 64)
    model = network(args.seed)
    names = ["bp", "np", *[n for n in RULES if n != "bp"]]
    updates = {n: [] for n in names}
    rates = []
    for b in range(args.batches):
        x, y = x_all[b * 64:(b + 1) * 64], y_all[b * 64:(b + 1) * 64]
        for name in names:
            updates[name].append(w1_update(name, model, x, y, calls=b, sigma=args.sigma, seed=args.seed))
        model.encoding_calls.fill_(b)
        with torch.no_grad():
            rates.append(float(model.hidden_spikes(model.encode(x))[0].mean()))
    reference = updates["bp"]
    rows = {}
    for name in names:
        per_batch = [cosine(u, g) for u, g in zip(updates[name], reference)]
        rows[name] = {
            "cos_per_batch_mean": float(np.mean(per_batch)), "cos_per_batch_std": float(np.std(per_batch)),
            "cos_of_means": cosine(torch.stack(updates[name]).mean(0), torch.stack(reference).mean(0)),
        }
    return {"rows": rows, "hidden_rate": float(np.mean(rates)), "batches": args.batches, "seed": args.seed, "sigma": args.sigma}


# ============================================================================= R-STDP against NP
class DirectHooks:
    """train_batch's hooks: W_1 moves by -p.grad (direct), the readout by SGD, then the rule's after-step hook."""

    global_step = 0

    def __init__(self, model: SNN, rule, readout_lr: float):
        self.model, self.rule = model, rule
        self.readout = torch.optim.SGD(model.readout.parameters(), lr=readout_lr)

    def zero_grad_all(self):
        for p in self.model.parameters():
            p.grad = None

    def update(self):
        with torch.no_grad():
            w = self.model.hidden[0].weight
            if w.grad is not None:
                w.sub_(w.grad)
        self.readout.step()
        self.rule.after_optimizer_step(self.model)
        self.global_step += 1

    def diverged(self, loss):
        return not bool(torch.isfinite(loss))

    def log_rule_metrics(self, metrics, batch_size):
        pass


class NodePerturbationOnW1:
    """Node perturbation of W_1 as a rule object for train_batch (the readout by its own gradient, like rstdp's
    readout=gradient): p.grad of W_1 = lr * the NP estimate, applied directly by DirectHooks."""

    def __init__(self, lr: float, sigma: float, seed: int):
        self.lr, self.sigma, self.generator = lr, sigma, torch.Generator().manual_seed(seed)

    def schedule(self, steps):
        from learnbench.rules.base import Call
        return [Call()]

    def begin_step(self, step):
        pass

    def extra_parameters(self):
        return []

    def after_optimizer_step(self, model):
        pass

    def estimate_grads(self, model: SNN, x, y, loss_fn):
        from learnbench.rules.base import RuleOutput
        pre = model.encode(x)
        model.hidden[0].weight.grad = self.lr * node_perturbation_grad(model, pre, y, self.sigma, self.generator)
        with torch.enable_grad():
            spikes = run_layer(model.neuron, model.hidden[0](pre).detach(), model.initial_state(len(y)).hidden[0])[0]
            output = model.output_from(spikes)
            loss = loss_fn(output, y).mean()
            grads = torch.autograd.grad(loss, list(model.readout.parameters()))
        for p, g in zip(model.readout.parameters(), grads):
            p.grad = g
        return RuleOutput(loss=loss.detach(), output=output.detach())


class ReadoutOnly(NodePerturbationOnW1):
    """The control: W_1 fixed, the readout by its gradient."""

    def estimate_grads(self, model, x, y, loss_fn):
        out = super().estimate_grads(model, x, y, loss_fn)
        model.hidden[0].weight.grad = None
        return out


def make_rule(kind: str, lr: float, sigma: float, seed: int):
    if kind == "rstdp":
        return rule_from_config("rstdp", lr=lr, readout="gradient")
    if kind == "np":
        return NodePerturbationOnW1(lr, sigma, seed)
    return ReadoutOnly(0.0, sigma, seed)


def accuracy(model: SNN, x: Tensor, y: Tensor) -> float:
    """The task's own prediction (the output's mean over steps, its largest class), on one draw of the rate code."""
    with torch.no_grad():
        return float((model(x).mean(1).argmax(-1) == y).float().mean())


def train(kind: str, lr: float, seed: int, data, args) -> SNN:
    (x, y) = data
    model, rule = network(seed), make_rule(kind, lr, args.sigma, seed)
    if kind == "rstdp":
        rule.setup(model, seed=seed, rank=0, device=torch.device("cpu"))
    model.hidden[0].weight.requires_grad_(True)
    hooks = DirectHooks(model, rule, args.readout_lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(args.epochs):
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y) - 31, 32):
            batch = order[i:i + 32]
            if train_batch(rule, model, x[batch], y[batch], LOSS_TASK, hooks) is None:
                return model
    return model


def update_spread(kind: str, lr: float, model: SNN, x: Tensor, y: Tensor, args, draws: int = 8) -> tuple[float, float]:
    """(relative variance of the W_1 update over `draws` noise draws on one batch, cosine of their mean with the
    surrogate gradient): the rate code's spikes and NP's noise are the noise of each rule."""
    grads = []
    for d in range(draws):
        if kind == "np":
            model.encoding_calls.fill_(10_000 + d)
            grads.append(node_perturbation_grad(model, model.encode(x), y, args.sigma, torch.Generator().manual_seed(d)))
        else:
            grads.append(w1_update("rstdp", model, x, y, calls=10_000 + d, sigma=args.sigma, seed=d))
    stacked = torch.stack(grads)
    mean = stacked.mean(0)
    variance = float(((stacked - mean) ** 2).sum((1, 2)).mean() / mean.pow(2).sum().clamp_min(1e-30))
    reference = torch.stack([w1_update("bp", model, x, y, calls=10_000 + d, sigma=args.sigma, seed=0) for d in range(draws)]).mean(0)
    return variance, cosine(mean, reference)


def race(args) -> dict:
    x, y = digits(args.data_dir, "train", args.train + 500)
    x_test, y_test = digits(args.data_dir, "test", 600)
    train_split, val_split = (x[:args.train], y[:args.train]), (x[args.train:], y[args.train:])
    grids = {"rstdp": [0.001, 0.01, 0.1], "np": [1e-4, 1e-3, 1e-2], "readout_only": [0.0]}
    results = {"grids": grids, "chosen": {}, "runs": {}}
    for kind, grid in grids.items():
        scores = {lr: accuracy(train(kind, lr, 0, train_split, args), *val_split) for lr in grid}
        lr = max(scores, key=scores.get)
        results["chosen"][kind] = {"lr": lr, "validation": scores}
        for seed in args.seeds:
            model = train(kind, lr, seed, train_split, args)
            row = {"test_accuracy": accuracy(model, x_test, y_test)}
            if kind != "readout_only":
                row["update_variance"], row["update_alignment"] = update_spread(kind, lr, model, x_test[:64], y_test[:64], args)
            results["runs"].setdefault(kind, {})[seed] = row
            print(kind, lr, seed, row, flush=True)
    return results


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def align_table(paths: list[Path]) -> str:
    """The markdown table of several `align --json` files (one per seed): mean ± std over seeds."""
    runs = [json.loads(p.read_text()) for p in paths]
    lines = ["| rule | cosine, per batch | cosine of the mean update | hidden spikes / step |", "|---|---:|---:|---:|"]
    for name in runs[0]["rows"]:
        per_batch = [r["rows"][name]["cos_per_batch_mean"] for r in runs]
        of_means = [r["rows"][name]["cos_of_means"] for r in runs]
        lines.append(f"| {name} | {mean_std(per_batch)} | {mean_std(of_means)} | {mean_std([r['hidden_rate'] for r in runs])} |")
    return "\n".join(lines)


def race_table(path: Path) -> str:
    """The markdown table of a `race --json` file: mean ± std over its seeds."""
    result = json.loads(path.read_text())
    lines = ["| W_1 learns by | lr (chosen on seed 0's validation) | test accuracy | update variance (relative) | "
             "update alignment (cosine) |", "|---|---:|---:|---:|---:|"]
    for kind, runs in result["runs"].items():
        cells = [mean_std([row[key] for row in runs.values()]) if key in next(iter(runs.values())) else "-"
                 for key in ("test_accuracy", "update_variance", "update_alignment")]
        lines.append(f"| {kind} | {result['chosen'][kind]['lr']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["align", "race", "table"])
    parser.add_argument("--align-json", type=Path, nargs="*", default=[], help="table: align --json files (one per seed)")
    parser.add_argument("--race-json", type=Path, help="table: a race --json file")
    parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/datasets"))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sigma", type=float, default=0.3, help="NP's noise std on the input currents (threshold 1)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--readout-lr", type=float, default=0.05)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.what == "table":
        print(align_table(args.align_json) if args.align_json else "", race_table(args.race_json) if args.race_json else "", sep="\n\n")
        return
    torch.set_num_threads(1)
    out = align(args) if args.what == "align" else race(args)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
