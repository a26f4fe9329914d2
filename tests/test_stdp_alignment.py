"""tools/stdp_alignment.py: the pieces its numbers rest on, each against an oracle.

- node perturbation on W_1 (written out in the tool): its expectation is the gradient. With a loss linear in the first
  layer's currents, E[(c . xi) xi_t] = sigma^2 c_t exactly, so the estimate over many examples' draws converges to
  autograd's dL/dW_1 (float64);
- every rule sees the same input spikes: `w1_update` resets the rate code's draws, so bp's update is autograd's
  gradient of the loss on the spikes `model.encode` gives at that call, and stdp's is the STDP change of those spikes.
"""

from __future__ import annotations

import torch

from learnbench.rules.plasticity.spike_timing import STDPTimes, pair_correlations, weight_change
from learnbench.tools import stdp_alignment as tool


def test_node_perturbation_on_w1_is_unbiased_for_a_loss_linear_in_the_currents(monkeypatch):
    g = torch.Generator().manual_seed(0)
    model = tool.network(0).double()
    # the loss reads step 3's currents, and only step 3 has input spikes: the estimate's variance is small enough
    weights = torch.zeros(tool.STEPS, tool.HIDDEN, dtype=torch.float64)
    weights[3] = torch.randn(tool.HIDDEN, generator=g, dtype=torch.float64)
    monkeypatch.setattr(tool, "per_example_loss", lambda model, currents, y: (currents * weights).sum((1, 2)))
    pre = torch.zeros(1, tool.STEPS, tool.INPUTS, dtype=torch.float64)
    pre[0, 3] = (torch.rand(tool.INPUTS, generator=g) < 0.5).double()
    pre = pre.expand(4000, -1, -1)
    y = torch.zeros(4000, dtype=torch.long)
    estimate = tool.node_perturbation_grad(model, pre, y, sigma=0.3, generator=torch.Generator().manual_seed(1))
    w = model.hidden[0].weight
    exact = torch.autograd.grad((model.hidden[0](pre[:1]) * weights).sum(), w)[0]
    assert torch.nn.functional.cosine_similarity(estimate.flatten(), exact.flatten(), dim=0) > 0.97
    assert abs(float(estimate.norm() / exact.norm()) - 1) < 0.1


def test_every_rule_sees_the_same_input_spikes():
    model = tool.network(0)
    x, y = tool.digits(tool.Path("/work/shared/datasets"), "train", 16) if tool.Path("/work/shared/datasets/MNIST").exists() \
        else (torch.rand(16, tool.INPUTS), torch.randint(0, 3, (16,)))
    bp = tool.w1_update("bp", model, x, y, calls=5, sigma=0.3, seed=0)
    stdp = tool.w1_update("stdp", model, x, y, calls=5, sigma=0.3, seed=0)
    model.encoding_calls.fill_(5)
    pre = model.encode(x)
    w = model.hidden[0].weight
    loss = tool.LOSS_TASK.loss(model.output_from(model.hidden_spikes(pre)[0]), y).mean()
    torch.testing.assert_close(bp, torch.autograd.grad(loss, w)[0])
    with torch.no_grad():
        post = model.hidden_spikes(pre)[0]
    potentiation, depression = pair_correlations(pre, post, STDPTimes(dt=1.0))
    torch.testing.assert_close(-stdp, weight_change(w.detach(), potentiation, depression, 1e-3, 1e-3, "additive", 1.0))
