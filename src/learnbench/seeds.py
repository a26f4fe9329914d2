"""Many seeds in one process: `seeds=[0,1,2,...]` trains one model per seed, side by side, as one model.

Why: on the small models (the spiral, Zipser-Andersen) a training step is mostly fixed costs (Python, Lightning,
kernel launches), so ten seeds stacked into one grouped model cost little more than one (docs/speed.md).

How, so that each seed ends where its own run would (tests/test_seeds.py compares with separate runs):
- every seed's run is first built as that run would be (the config with `seed=s`, the global RNG seeded with s):
  its initial weights, its rule state (feedback matrices), its data order;
- the models are packed into one chain of grouped blocks (`SeedStackedMLP`): a grouped 1x1 convolution is S
  independent dense maps side by side (as models/mlp.py's grouped layers), a LayerNorm a GroupNorm with one
  group per seed; the rule's state is packed the same way (`pack_state`);
- each step takes every seed's own next batch, their inputs side by side ([B, S * in]) and targets [B, S]
  (`SeedStackedData`);
- the loss is the sum over seeds of each seed's mean loss (`SeedStackedTask`), so every seed's parameters get
  exactly its own gradient; SGD, momentum, weight decay and Adam act per element, so seeds stay apart;
- each seed's metrics are logged under `<split>/<name>@<seed>` and become its own results.json in seed_<s>/
  (`seed_records`), as if it had run alone; the stack's own results.json sits beside them (`seed_stack`).

Recurrent models (model=rnn, model=esn, on sequence data) and SpikeProp's spike-response network (model=srm) stack
the same way with another packing (`stacked_block_diagonal`): S networks of N units are one network of S * N units
whose every weight matrix is block-diagonal (seed s's block is its own matrix, the rest zeros; model=srm's
[outputs, inputs, synapses] weights block-diagonal in their first two axes). Seed s's units then read only its own units and
inputs, and every rule that works on one network works unchanged on the stack (its traces, its feedback B,
block-diagonal too). What would cross between the seeds is the off-diagonal part of an update (a rule's outer
product of one seed's error with another's activity, never a real weight): the training module zeroes it before every
step (`SeedGradMasks`, a `module.GradMasks`), so the zeros stay zeros under SGD, momentum, weight decay and Adam. A closed-form readout
(method=ridge) solves each seed's block of its statistics alone (`seed_blocks`). Sequences keep time on axis 1:
inputs [B, T, S * in], targets [B, T, S * D] (each seed's per-step targets side by side).

Only rules whose step keeps the seeds apart by construction stack (`LearningRule.stacks_seeds`); the others say
why not (one loss difference for the whole model, or one generator's draws for all units, would mix the seeds; RTRL's
influence tensor would grow as (S N)^3). A global gradient-norm clip would mix them too and is refused; so are other
models, several processes and resuming.
"""

from __future__ import annotations

import copy
import functools
import logging
from pathlib import Path

import lightning as L
import torch
import torchmetrics
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from torch import Tensor, nn

from learnbench.config_validation import ConfigError
from learnbench.models.blocks import Block, BlockChain, GroupedLinear
from learnbench.models.esn import ESN
from learnbench.models.mlp import MLP
from learnbench.models.rnn import RNN
from learnbench.models.srm import SRM
from learnbench.module import GradMasks
from learnbench.results import write_results
from learnbench.tasks import OTHER_LOSS, Classification, SequenceTask, Task

log = logging.getLogger("learnbench")

#: Results of seed s of a stack: <run dir>/seed_<s>/results.json.
SEED_FOLDER = "seed_{seed}"


# ----------------------------------------------------------------------------- the config
def seed_list(cfg: DictConfig) -> list[int]:
    """The seeds of a stack (`seeds=[0,1,2]`); [] when the run is one seed (or `seeds` is not a list, which the
    config check refuses)."""
    seeds = cfg.get("seeds")
    if not isinstance(seeds, (ListConfig, list, tuple)) or not all(isinstance(s, int) for s in seeds):
        return []
    return [int(s) for s in seeds]


def check_stack_config(cfg: DictConfig, seeds: list[int]) -> None:
    """What a stack cannot do, refused before any work, one line each."""
    if len(set(seeds)) != len(seeds) or len(seeds) < 2:
        raise ConfigError(f"seeds={seeds}: give two or more different seeds (one seed: seed=<s>)")
    if cfg.get("ckpt_path"):
        raise ConfigError(f"seeds={seeds} cannot resume from ckpt_path: a stack trains in minutes; run it again")
    if cfg.get("forward_equivalents") is not None:
        raise ConfigError(f"seeds={seeds} with forward_equivalents: give the budget as trainer.max_epochs or trainer.max_steps")
    if (cfg.get("callbacks") or {}).get("converged"):
        raise ConfigError(f"seeds={seeds} with callbacks.converged: it stops a run once its metric crosses a threshold, "
                          f"and a stack would stop as one; set callbacks.converged=null (a fixed budget: each seed's history "
                          f"shows the epoch it got there) or run the seeds separately")
    devices = cfg.trainer.get("devices", 1)
    if (isinstance(devices, int) and devices > 1) or "ddp" in str(cfg.trainer.get("strategy", "")):
        raise ConfigError(f"seeds={seeds} runs on one process: use trainer=cpu (the seeds are the parallelism)")


#: The models a stack packs block-diagonally: (their size attributes that grow with the seeds, the buffers every seed
#: shares as they are: model=srm's synaptic delays).
BLOCK_DIAGONAL = {RNN: (("input_dim", "hidden_size", "output_dim"), ()), ESN: (("input_dim", "units", "output_dim"), ()),
                  SRM: ((), ("delays",))}


def check_stackable(rule, model: nn.Module, task: Task, seeds: list[int], method: str) -> None:
    """The rule, model and task of one seed's run, before they are stacked."""
    if rule.stacks_seeds is not True:
        raise ConfigError(f"seeds={seeds}: method={method} cannot train seeds stacked in one "
                          f"model: {rule.stacks_seeds}; run the seeds separately (-m seed={','.join(map(str, seeds))})")
    if type(model) is SRM:
        return
    if type(model) in BLOCK_DIAGONAL:
        if not task.sequential or not getattr(task, "per_step", False):
            raise ConfigError(f"seeds={seeds} stacks {type(model).__name__}s on sequences with a target at every step "
                              f"(data=sine_trajectory, add_task, mackey_glass, ...); this task is not one: run the seeds separately")
        return
    if not isinstance(model, MLP) or any(not isinstance(b.linear, nn.Linear) for b in model.blocks):
        raise ConfigError(f"seeds={seeds} stacks dense MLPs (model=mlp or autoencoder, ungrouped), rate RNNs and "
                          f"reservoirs (model=rnn, esn) and SpikeProp's network (model=srm); {type(model).__name__} is not "
                          f"one: run the seeds separately")
    if task.sequential:
        raise ConfigError(f"seeds={seeds} stacks an MLP on feed-forward tasks only; this data is a sequence: run the seeds separately")


def check_no_clip(cfg: DictConfig, seeds: list[int]) -> None:
    """After the rule's own check: a rule that cannot stack says so first, though its tuned file also clips."""
    if cfg.get("grad_clip_norm") is not None:
        raise ConfigError(f"seeds={seeds} with grad_clip_norm={cfg.grad_clip_norm}: a clip of the global gradient norm would "
                          f"mix the seeds' steps; run the seeds separately (-m seed={','.join(map(str, seeds))})")


# ----------------------------------------------------------------------------- packing
def pack_state(packed: nn.Module, parts: list[nn.Module]) -> set[str]:
    """Copy the seeds' tensors (parameters and buffers) into the packed module, seed after seed along the first
    axis: a layer's (out, in) weights into the grouped (S * out, in, 1, 1), a bias (out,) into (S * out,). A matrix
    the stack holds S x S times over (dfa's B_l, every output to every unit: (S * outputs, S * units); a recurrent
    stack's every weight) is block-diagonal, so each seed's outputs reach only its own units. A tensor that is the
    same for every seed (a step count) is copied once. Anything else cannot be packed: an error. Returns the names
    packed block-diagonally (their off-diagonal blocks must stay zero: SeedGradMasks)."""
    state = packed.state_dict()
    per_seed = [part.state_dict() for part in parts]
    block_diagonal = set()
    for key, target in state.items():
        tensors = [s[key] for s in per_seed]
        first = tensors[0]
        if first.shape == target.shape and all(torch.equal(t, first) for t in tensors):
            stacked = first
        elif all(not t.any() for t in tensors):  # zeros in any layout (ridge's statistics before the first batch)
            stacked = torch.zeros_like(target)
        elif first.dim() >= 2 and target.shape == (len(parts) * first.shape[0], len(parts) * first.shape[1], *first.shape[2:]):
            stacked = block_diagonal_of(tensors)
            block_diagonal.add(key)
        elif target.numel() == len(parts) * first.numel() and target.dim() and target.shape[0] == len(parts) * (first.shape[0] if first.dim() else 1):
            stacked = torch.cat([t.reshape(len(t) if t.dim() else 1, -1) for t in tensors]).reshape(target.shape)
        else:
            raise ConfigError(f"seeds: {type(packed).__name__}'s {key} {tuple(target.shape)} cannot be packed from "
                              f"the seeds' {tuple(first.shape)}; run the seeds separately")
        with torch.no_grad():
            target.copy_(stacked)
    return block_diagonal


def block_diagonal_of(tensors: list[Tensor]) -> Tensor:
    """The seeds' [rows, cols, ...] tensors as one [S rows, S cols, ...], seed s's in block (s, s), zeros elsewhere."""
    rows, cols = tensors[0].shape[:2]
    out = tensors[0].new_zeros(len(tensors) * rows, len(tensors) * cols, *tensors[0].shape[2:])
    for s, t in enumerate(tensors):
        out[s * rows:(s + 1) * rows, s * cols:(s + 1) * cols] = t
    return out


def stacked_block_diagonal(models: list[nn.Module]) -> nn.Module:
    """S networks (model=rnn, esn or srm) of one configuration as one network of S times the units, inputs and
    outputs: a copy of seed 0's whose every matrix is block-diagonal over the seeds (`pack_state`) and every vector
    the seeds' side by side (a buffer every seed shares, model=srm's delays, kept as it is). Its `seed_blocks` says
    how many seeds it holds (a closed-form readout solves each block alone); its `counted_parameters` counts only the
    blocks (results.json's parameters, not S^2 N^2)."""
    first, seeds = models[0], len(models)
    sizes, shared = BLOCK_DIAGONAL[type(first)]
    stacked = copy.deepcopy(first)
    for name, p in list(first.named_parameters()) + list(first.named_buffers()):
        if p is None or name.rpartition(".")[2] in shared:
            continue
        shape = (seeds * p.shape[0], seeds * p.shape[1], *p.shape[2:]) if p.dim() >= 2 else (seeds * p.shape[0], *p.shape[1:])
        owner, leaf = stacked.get_submodule(name.rpartition(".")[0]) if "." in name else stacked, name.rpartition(".")[2]
        blank = p.new_zeros(shape)
        if isinstance(p, nn.Parameter):
            owner._parameters[leaf] = nn.Parameter(blank, requires_grad=p.requires_grad)
        else:
            owner._buffers[leaf] = blank
    for attribute in sizes:
        setattr(stacked, attribute, seeds * getattr(first, attribute))
    if isinstance(stacked, ESN):  # the stack's W holds S blocks of the seeds' density: the sparse path's threshold reads it
        stacked.density = first.density / seeds
    stacked.seed_blocks = seeds
    stacked.counted_parameters = seeds * sum(p.numel() for p in first.parameters() if p.requires_grad)
    pack_state(stacked, models)
    return stacked


class SeedGradMasks(GradMasks):
    """The block-diagonal parameters of a block-diagonal stack (model and rule) with a mask each: ones on the seeds'
    own blocks. `restrict` zeroes the rest of every gradient before a step, so no update crosses between seeds."""

    def __init__(self, named: dict[str, nn.Parameter], seeds: int):
        super().__init__([(p, block_diagonal_of([p.new_ones(p.shape[0] // seeds, p.shape[1] // seeds, *p.shape[2:])] * seeds))
                          for p in named.values()])


def gradient_masks(model: nn.Module, rule: nn.Module, rule_blocks: set[str], seeds: int) -> SeedGradMasks:
    """The masks of a block-diagonal stack: every matrix of the model that learns, and the rule's learned matrices that
    `pack_state` packed block-diagonally (`rule_blocks`; adaptive e-prop's B)."""
    rule_params = dict(rule.named_parameters())
    learned = {**{f"model.{n}": p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2},
               **{f"rule.{n}": rule_params[n] for n in rule_blocks if n in rule_params and rule_params[n].requires_grad}}
    return SeedGradMasks(learned, seeds)


def stacked_block(block: Block, seeds: int) -> Block:
    """One dense block of S seeds: a grouped 1x1 convolution (S independent dense maps), a GroupNorm with one group
    per seed for a LayerNorm (normalises each seed's units alone, with per-unit affine parameters: LayerNorm's),
    the same activation."""
    linear = block.linear
    conv = GroupedLinear(seeds * linear.in_features, seeds * linear.out_features, seeds, bias=linear.bias is not None)
    norm = None
    if isinstance(block.norm, nn.LayerNorm):
        norm = nn.GroupNorm(seeds, seeds * linear.out_features, eps=block.norm.eps, affine=block.norm.elementwise_affine)
    packed = Block(conv, "identity", norm)
    packed.activation = copy.deepcopy(block.activation)
    return packed


class SeedStackedMLP(BlockChain):
    """S MLPs of one architecture as one chain of grouped blocks: input [B, S * in] (the seeds' inputs side by
    side), output [B, S * out]. Weights packed from the seeds' own models (their initialisations)."""

    def __init__(self, models: list[MLP]):
        super().__init__()
        first, seeds = models[0], len(models)
        self.seeds = seeds
        self.blocks = nn.Sequential(*[stacked_block(b, seeds) for b in first.blocks])
        self.local_heads = first.local_heads
        self.input_dim, self.output_dim = seeds * first.input_dim, seeds * first.output_dim
        self.input_shape = (self.input_dim,)
        pack_state(self, models)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x).flatten(1)


class SeedMetrics(torchmetrics.Metric):
    """One split's metrics of every seed of a stack: each seed's mean loss, and its accuracy where the task is a
    classification (counted for all seeds at once), else the task's own metric objects, one set per seed.

    Not logged through Lightning (`reported_by_module`): ten seeds' values would be tens of `self.log` keys an epoch
    at ~1 ms each, more than the spiral's epoch itself. The module reads them once an epoch
    (LearningRuleModule.pop_epoch_reported) and the run recorder puts them in the history, `val/acc@3`."""

    reported_by_module = True
    full_state_update = False

    def __init__(self, task: Task, seeds: list[int], outputs: int, vectorised: bool):
        super().__init__()
        self.task, self.seeds, self.outputs, self.vectorised = task, seeds, outputs, vectorised
        self.add_state("loss", torch.zeros(len(seeds), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros(len(seeds), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("examples", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.own = nn.ModuleList([] if vectorised else [nn.ModuleDict(task.metrics(outputs)) for _ in seeds])

    def update(self, losses: Tensor, output: Tensor, target: Tensor) -> None:
        """losses [B, S]; output [B, S, C]; target [B, S, ...]."""
        self.loss += losses.detach().sum(0)
        self.examples += len(losses)
        if self.vectorised:
            self.correct += (output.argmax(-1) == target).sum(0)
            return
        for i, metrics in enumerate(self.own):
            self.task.update(dict(metrics.items()), output[:, i], target[:, i])

    def compute(self) -> dict[str, float]:
        values = {}
        for i, s in enumerate(self.seeds):
            values[f"loss@{s}"] = float(self.loss[i] / self.examples.clamp_min(1))
            if self.vectorised:
                values[f"acc@{s}"] = float(self.correct[i] / self.examples.clamp_min(1))
            else:
                values.update({f"{name}@{s}": float(m.compute()) for name, m in self.own[i].items()})
        return values

    def reset(self) -> None:
        super().reset()
        for metrics in self.own:
            for m in metrics.values():
                m.reset()


class SeedStackedTask(Task):
    """The task of S seeds side by side: output [B, S * C], target [B, S, ...]. The loss of an example is the sum
    over seeds of its loss in each (the batch mean is then each seed's mean loss, summed); the metrics are each
    seed's own (SeedMetrics), named `<name>@<seed>`, the loss among them."""

    name = "seed_stack"
    loss_kind = OTHER_LOSS  # rules that write a known loss's derivative out take autograd's route instead

    def __init__(self, task: Task, seeds: list[int], outputs: int):
        self.task, self.seeds, self.outputs = task, list(seeds), outputs
        # A classification's accuracy is counted for all seeds at once; other tasks' metrics (Zipser-Andersen's
        # angles, a reconstruction's MSE) are the task's own objects, one per seed.
        self.vectorised = isinstance(task, Classification) and set(task.metrics(outputs)) == {"acc"}

    def by_seed(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(output [B, S, C], target [B, S, ...]): each seed's part of a batch."""
        return output.reshape(len(output), len(self.seeds), self.outputs), target

    def per_seed_losses(self, output: Tensor, target: Tensor, loss=None) -> Tensor:
        """[B, S]: every example's loss in each seed (the task's loss, or `loss`), the seeds taken as more examples."""
        out, tgt = self.by_seed(output, target)
        losses = (loss or self.task.loss)(out.flatten(0, 1), tgt.flatten(0, 1))
        return losses.view(len(output), len(self.seeds))

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.per_seed_losses(output, target).sum(1)

    def metrics(self, num_outputs: int) -> dict[str, torchmetrics.Metric]:
        return {"seeds": SeedMetrics(self.task, self.seeds, self.outputs, self.vectorised)}

    def update(self, metrics: dict[str, torchmetrics.Metric], output: Tensor, target: Tensor) -> None:
        metrics["seeds"].update(self.per_seed_losses(output, target), *self.by_seed(output, target))


class SeedStackedSequenceTask(SeedStackedTask, SequenceTask):
    """S seeds' sequence task side by side, time on axis 1: output [B, T, S * O], target [B, T, S * D] (every seed's
    per-step target beside the others'). Windows and the washout are the seeds' task's: a window's loss is the sum
    over seeds of each seed's window loss."""

    def __init__(self, task: SequenceTask, seeds: list[int], outputs: int, target_width: int):
        super().__init__(task, seeds, outputs)
        self.target_width = target_width
        self.per_step, self.fittable_targets, self.washout = task.per_step, task.fittable_targets, task.washout

    def by_seed(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(output [B, S, T, O], target [B, S, T, D])."""
        s = len(self.seeds)
        return (output.unflatten(-1, (s, self.outputs)).transpose(1, 2),
                target.unflatten(-1, (s, self.target_width)).transpose(1, 2))

    def with_washout(self, washout: int) -> "SeedStackedSequenceTask":
        return SeedStackedSequenceTask(self.task.with_washout(washout), self.seeds, self.outputs, self.target_width)

    def window_target(self, target: Tensor, t0: int, t1: int) -> Tensor:
        return target[:, t0:t1]

    def window_loss(self, steps: int, t0: int, t1: int):
        return functools.partial(self.window_losses, self.task.window_loss(steps, t0, t1))

    def window_losses(self, loss, output: Tensor, target: Tensor) -> Tensor:
        return self.per_seed_losses(output, target, loss).sum(1)


class StackedBatches:
    """The seeds' loaders in step: each batch is every seed's own next batch, inputs side by side, targets stacked
    (a feed-forward batch: inputs [B, S * in], targets [B, S, ...]; sequences: both side by side on their last
    axis, time kept on axis 1). Lightning's `sampler.set_epoch` reaches every seed's loader (each keeps its own
    order per epoch)."""

    batch_sampler = None

    def __init__(self, loaders: list, sequential: bool = False):
        self.loaders = loaders
        self.sequential = sequential

    @property
    def sampler(self) -> "StackedBatches":
        return self

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            loader.set_epoch(epoch)

    def __len__(self) -> int:
        return min(len(loader) for loader in self.loaders)

    def __iter__(self):
        for batches in zip(*self.loaders):
            if self.sequential:
                yield torch.cat([x for x, _ in batches], dim=-1), torch.cat([y for _, y in batches], dim=-1)
            else:
                yield torch.cat([x.flatten(1) for x, _ in batches], dim=1), torch.stack([y for _, y in batches], dim=1)


class SeedStackedData(L.LightningDataModule):
    """The seeds' data modules as one (each with its own order, from its seed)."""

    def __init__(self, parts: list, sequential: bool = False):
        super().__init__()
        self.parts = parts
        self.sequential = sequential
        first = parts[0]
        if sequential:  # [time, features]: the seeds' features side by side
            self.input_shape = (first.input_shape[0], len(parts) * first.input_shape[-1])
        else:
            self.input_shape = (len(parts) * first.input_dim,)
        self.output_dim = len(parts) * first.output_dim
        self.task = first.task

    def setup(self, stage: str | None = None) -> None:
        for part in self.parts:
            part.trainer = self.trainer
            part.setup(stage)

    def check_splits_fit(self, world_size: int = 1, name: str = "the data") -> None:
        self.parts[0].check_splits_fit(world_size, name)

    def train_dataloader(self):
        return StackedBatches([p.train_dataloader() for p in self.parts], self.sequential)

    def val_dataloader(self):
        return StackedBatches([p.val_dataloader() for p in self.parts], self.sequential)

    def test_dataloader(self):
        return StackedBatches([p.test_dataloader() for p in self.parts], self.sequential)


# ----------------------------------------------------------------------------- building a stack
def with_seed(cfg: DictConfig, seed: int) -> DictConfig:
    """The config of seed `seed`'s own run."""
    one = copy.deepcopy(cfg)
    with open_dict(one):
        one.seed = seed
        one.seeds = None
    return one


def build_stack(cfg: DictConfig, extra_callbacks: list):
    """(data, module, trainer, recorder) of a stack, as train.build gives them for one seed. Each seed's model and
    rule are built as its own run builds them (the same calls, the global RNG seeded with its seed), then packed."""
    from learnbench.module import LearningRuleModule
    from learnbench.train import build_module, build_trainer, config_choices, task_of  # train imports this module

    seeds = seed_list(cfg)
    check_stack_config(cfg, seeds)
    parts, modules = [], []
    method = config_choices(cfg).get("method") or str(cfg.method._target_).rsplit(".", 1)[-1]  # for messages
    for s in seeds:
        one = with_seed(cfg, s)
        L.seed_everything(s, workers=True, verbose=False)
        datamodule = instantiate(one.data)
        module = build_module(one, datamodule.input_shape, datamodule.output_dim, task_of(one, datamodule))
        check_stackable(module.rule, module.model, module.task, seeds, method)
        check_no_clip(one, seeds)
        module.rule.setup(module.model, seed=s, rank=0, device=torch.device("cpu"))
        parts.append(datamodule)
        modules.append(module)
    first = modules[0]
    block_diagonal = type(first.model) in BLOCK_DIAGONAL
    model = stacked_block_diagonal([m.model for m in modules]) if block_diagonal else SeedStackedMLP([m.model for m in modules])
    rule = instantiate(cfg.method)
    rule.bind(model, seeds[0])
    rule.setup(model, seed=seeds[0], rank=0, device=torch.device("cpu"))
    rule_blocks = pack_state(rule, [m.rule for m in modules])
    outputs = parts[0].output_dim
    if first.task.sequential:
        target_width = check_targets_side_by_side(parts[0], seeds)
        task = SeedStackedSequenceTask(first.task, seeds, outputs, target_width)
    else:
        task = SeedStackedTask(first.task, seeds, outputs)
    module = LearningRuleModule(
        model=model, rule=rule, optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        task=task, num_classes=outputs, seed=seeds[0], bias_lr_scale=cfg.get("bias_lr_scale", 1.0),
        # Alignment diagnostics compare with backprop over the whole stack: one mixed number, not a seed's.
        diagnostics_every_n_steps=0,
    )
    if block_diagonal:
        module.seed_grad_masks = gradient_masks(model, rule, rule_blocks, len(seeds))
    if cfg.get("diagnostics", {}).get("every_n_steps"):
        log.info("seeds: the align/* diagnostics are per run and are not computed in a stack (run a seed alone for them)")
    data = SeedStackedData(parts, sequential=first.task.sequential)
    trainer, recorder = build_trainer(cfg, extra_callbacks)
    return data, module, trainer, recorder


def check_targets_side_by_side(datamodule, seeds: list[int]) -> int:
    """The width D of one seed's per-step targets [B, T, D] (a stack puts the seeds' side by side); refused for
    targets of another shape (one class index per step)."""
    y = datamodule.load().train[1]  # every training target, [examples, time, values]
    if y.dim() != 3:
        raise ConfigError(f"seeds={seeds} stacks sequences whose targets are [batch, time, values]; this data's are "
                          f"{tuple(y.shape[1:])} per sequence: run the seeds separately")
    return y.shape[-1]


# ----------------------------------------------------------------------------- each seed's results
def own_metrics(metrics: dict, seed: int) -> dict:
    """A seed's entries of a stack's metrics, named as in its own run (`val/acc@3` -> `val/acc`); the stack-wide ones
    (the summed loss, a rule's summed diagnostics) left out."""
    suffix = f"@{seed}"
    return {k[: -len(suffix)]: v for k, v in metrics.items() if k.endswith(suffix)}


def own_history_entry(entry: dict, seed: int) -> dict:
    shared = {k: v for k, v in entry.items() if "/" not in k}  # epoch, step, times, forward equivalents
    return {**shared, **own_metrics(entry, seed)}


def seed_records(record: dict, cfg: DictConfig) -> list[dict]:
    """One results.json record per seed: the stack's record with that seed's metrics, history and config."""
    seeds = seed_list(cfg)
    records = []
    for s in seeds:
        one = copy.deepcopy(record)
        one["seed"] = s
        one["config"] = OmegaConf.to_container(with_seed(cfg, s), resolve=True, throw_on_missing=False)
        one["metrics"] = {part: own_metrics(values, s) for part, values in record["metrics"].items()}
        one["history"] = [own_history_entry(e, s) for e in record.get("history", [])]
        # Times, resources and compute are the whole stack's (one process trained every seed); the parameters one seed's.
        one["seed_stack"] = {"seeds": seeds, "stack_dir": record["output_dir"], "shared": ["fit_time_s", "wall_time_s", "resources", "compute"]}
        one["output_dir"] = str(Path(record["output_dir"]) / SEED_FOLDER.format(seed=s))
        if record.get("parameters"):
            one["parameters"] = record["parameters"] // len(seeds)
        if record.get("message"):  # a stack stops as one: its summed loss is what went non-finite
            one["message"] = f"in the seed stack {seeds} (stopped as one; run seed={s} alone to see its own run): {record['message']}"
        records.append(one)
    return records


def write_seed_records(record: dict, cfg: DictConfig) -> list[Path]:
    return [write_results(Path(one["output_dir"]), one) for one in seed_records(record, cfg)]
