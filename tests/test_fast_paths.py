"""The rules' fast paths on plain MLP chains against their general paths (a second implementation).

On `MLP` / `Autoencoder` the activity-space rules run the blocks themselves and fg_w writes its
jvp out layer by layer; any other model built from Blocks goes through forward hooks and
torch.func. A subclass with its own `forward` (the same function) takes the general path, so the
two implementations can be compared on the same parameters, batch and noise (float64).
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from learnbench.data.in_memory import per_example_loss
from learnbench.models import MLP
from learnbench.paths import CONFIG_DIR
from learnbench.rules.activity_space import chain_of


class GeneralMLP(MLP):
    """The same network; a forward of its own makes the rules treat it as an arbitrary model."""

    def forward(self, x):
        return self.blocks(x.flatten(1))


def estimate(model, method, overrides, x, y, step=3):
    rule = instantiate(OmegaConf.load(CONFIG_DIR / "method" / f"{method}.yaml"), table_size=0, **overrides)
    rule.setup(model, seed=0, rank=0, device=torch.device("cpu"))
    rule.begin_step(step)
    for p in model.parameters():
        p.grad = None
    out = rule.estimate_grads(model, x, y, lambda o, t: per_example_loss("classification", o, t))
    return torch.cat([p.grad.reshape(-1).clone() for p in model.parameters()]), out.loss


@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "layernorm"])
@pytest.mark.parametrize(
    "method,overrides",
    [("np", {}), ("np", {"directions": 2, "antithetic": True}), ("np", {"baseline": "none"}),
     ("fg_a", {}), ("fg_a", {"directions": 3}), ("fg_a", {"mask_inactive": False}),
     ("fg_w", {}), ("fg_w", {"directions": 3})],
    ids=["np", "np-K2-antithetic", "np-no-baseline", "fg_a", "fg_a-K3", "fg_a-unmasked", "fg_w", "fg_w-K3"],
)
def test_fast_path_equals_general_path(method, overrides, layer_norm, float64):
    torch.manual_seed(0)
    fast = MLP(5, 3, (7, 6), layer_norm=layer_norm)
    general = GeneralMLP(5, 3, (7, 6), layer_norm=layer_norm)
    general.load_state_dict(fast.state_dict())
    assert chain_of(fast) is not None and chain_of(general) is None  # the two paths really differ
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    g_fast, loss_fast = estimate(fast, method, overrides, x, y)
    g_general, loss_general = estimate(general, method, overrides, x, y)
    torch.testing.assert_close(loss_fast, loss_general, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_fast, g_general, rtol=1e-9, atol=1e-9)
    assert g_fast.abs().sum() > 0
