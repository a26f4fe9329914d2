"""Shared machinery of activity-space estimators (node perturbation, activity forward gradient).

Both estimate delta_l = dL/da_l, the loss gradient at each block's pre-activation a_l (the
`PerturbationSite` after Linear [and LayerNorm]), for each example, then update every block
*locally* from its own input z_l and delta_l: for a Linear layer dL/dW = delta^T z and
dL/db = sum_rows delta, one matmul per layer and no chain through other layers. A LayerNorm
between the Linear and the site is differentiated locally too (autograd over that one module).
Later rules that produce a delta per layer (feedback alignment, DFA, ...) reuse `local_update`.

Hooks on the model's modules inject noise or tangents at the sites and record (z_l, h_l), the
block input and the Linear output, so models stay plain nn.Modules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from learnbench.models.mlp import MLP, Block
from learnbench.rules.base import LearningRule, LossFn, RuleOutput, trainable_parameters
from learnbench.rules.noise import NoiseSource

# (block index, site output a_l, block) -> the perturbed a_l
Perturb = Callable[[int, Tensor, Block], Tensor]
# (block index, block input z_l, linear output h_l) -> None
Record = Callable[[int, Tensor, Tensor], None]


def blocks_of(model: nn.Module) -> list[Block]:
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    covered = {id(p) for b in blocks for p in b.parameters()}
    if not blocks or any(id(p) not in covered for p in trainable_parameters(model)):
        raise ValueError(
            f"activity-space rules need a model built from learnbench.models.Block layers (model=mlp or "
            f"model=autoencoder); {type(model).__name__} has parameters outside such blocks"
        )
    return blocks


@contextmanager
def hooked(blocks: list[Block], perturb: Perturb | None = None, record: Record | None = None) -> Iterator[None]:
    """Within the block, forward passes perturb each site and/or record each block's (z, h)."""
    handles = []
    for i, block in enumerate(blocks):
        if record is not None:
            handles.append(block.pre[0].register_forward_hook(lambda m, inp, out, i=i: record(i, inp[0], out)))
        if perturb is not None:
            handles.append(block.pre[-1].register_forward_hook(lambda m, inp, out, i=i, b=block: perturb(i, out, b)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def chain_of(model: nn.Module) -> list[Block] | None:
    """The blocks of a model whose forward is exactly `blocks(x.flatten(1))` (MLP, Autoencoder), else None.

    On such a chain the rules run the forward pass block by block themselves (no hooks), which
    lets them share work between passes: the first Linear of a clean and a noisy pass, or one
    primal pass under K batched tangents. Any other model built of Blocks takes the hooked path."""
    if isinstance(model, MLP) and type(model).forward is MLP.forward:
        return list(model.blocks)
    return None


def jvp_through(module: nn.Module, a: Tensor, t: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """(module(a), its tangent) for an elementwise/row-wise module (activation, LayerNorm, site).

    `t` may carry extra leading direction dimensions over `a` ([K, B, w] against [B, w]): the
    primal is computed once and every direction's tangent from it."""
    out = module(a)
    if t is None or _is_identity(module):
        return out, t
    if isinstance(module, nn.ReLU):
        return out, t * (a > 0)
    from torch.func import jvp, vmap

    def along(tangent: Tensor) -> Tensor:
        return jvp(module, (a,), (tangent,))[1]

    for _ in range(t.dim() - a.dim()):
        along = vmap(along)
    return out, along(t)


def loss_jvp(loss_fn, output: Tensor, y: Tensor, d_output: Tensor) -> tuple[Tensor, Tensor]:
    """(per-example losses [B], their derivatives along each direction [K, B]) at `output`, for
    output tangents d_output [K, B, ...]: the last step of a hand-written forward-mode pass."""
    from torch.func import jvp, vmap

    return vmap(lambda t: jvp(lambda o: loss_fn(o, y), (output,), (t,)), out_dims=(None, 0))(d_output)


def _is_identity(module: nn.Module) -> bool:
    if isinstance(module, nn.Sequential):
        return all(_is_identity(m) for m in module)
    return isinstance(module, nn.Identity)


def relu_mask(block: Block, a: Tensor) -> Tensor | None:
    """1 where the unit after this site is active; None when the activation is not a ReLU."""
    return (a > 0).to(a.dtype) if isinstance(block.activation, nn.ReLU) else None


def local_update(block: Block, z: Tensor, h: Tensor, delta: Tensor) -> None:
    """Write the block's parameter gradients from its input z, Linear output h and dL/da = delta."""
    linear, rest = block.pre[0], block.pre[1:]
    rest_params = [p for p in rest.parameters() if p.requires_grad]
    if rest_params or any(not isinstance(m, (nn.Identity,)) for m in rest):
        with torch.enable_grad():  # local: through the LayerNorm of this block only
            h_leaf = h.detach().requires_grad_()
            grads = torch.autograd.grad(rest(h_leaf), [h_leaf, *rest_params], delta)
        delta = grads[0]
        for p, g in zip(rest_params, grads[1:]):
            p.grad = g
    if linear.weight.requires_grad:
        linear.weight.grad = delta.T @ z
    if linear.bias is not None and linear.bias.requires_grad:
        linear.bias.grad = delta.sum(0)


class ActivitySpaceRule(LearningRule):
    """Subclasses implement `site_errors`; the local update is shared."""

    def __init__(self, directions: int = 1, noise: str = "gaussian", table_size: int = 0, clip: float | None = None):
        super().__init__()
        if directions < 1:
            raise ValueError(f"method.directions={directions}: needs at least one direction")
        self.directions = directions
        self.noise = NoiseSource(noise, table_size)
        self.clip = clip

    def setup(self, model, seed, rank, device):
        blocks_of(model)  # fail at start, not at the first step
        super().setup(model, seed, rank, device)

    def sample_site_noise(self, rows: int, widths: list[int], dtype: torch.dtype | None = None) -> list[Tensor]:
        """Independent noise for every example (row) and unit of every site: [rows, width_l] each."""
        flat = self.noise.sample(rows * sum(widths), 1, self.generator, dtype)[0].view(rows, sum(widths))
        return list(flat.split(widths, dim=1))

    def site_errors(self, model, blocks, x, y, loss_fn) -> tuple[list[Tensor], list[tuple[Tensor, Tensor]], Tensor, Tensor | None]:
        """Return (delta_l per block, (z_l, h_l) per block with the same rows, clean loss, clean output)."""
        raise NotImplementedError

    @torch.no_grad()
    def estimate_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        blocks = blocks_of(model)
        deltas, records, loss, output = self.site_errors(model, blocks, x, y, loss_fn)
        for block, (z, h), delta in zip(blocks, records, deltas):
            local_update(block, z, h, delta)
        return RuleOutput(loss=loss.detach(), output=None if output is None else output.detach())


def clip_(d: Tensor, clip: float | None) -> Tensor:
    return d if clip is None else d.clamp_(-clip, clip)
