"""model=esn's perturbation sites (models/esn_sites.py): the pre-activation p_t and the readout y_t at every step, what
np and fg_a perturb and fg_w's forward-mode walk reads.

Oracles: the model's own forward pass (the walk without shifts), torch.func.jvp of the forward pass along weight
tangents and of the shifted walk along site tangents (float64), autograd for what each site's input is; and
`learnbench.verify`'s statistical test that np, fg_a and fg_w are unbiased estimates of BPTT's gradient on the ESN.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, jvp

from learnbench.models.esn import ESN
from learnbench.rules import NodePerturbation
from learnbench.verify import verify

T, INPUTS, OUTPUTS, UNITS = 12, 2, 3, 9


def esn(**options) -> ESN:
    torch.manual_seed(0)
    model = ESN(input_shape=(T, INPUTS), output_dim=OUTPUTS, units=UNITS, spectral_radius=0.9, leak_rate=0.4,
                connectivity=0.5, bias_scaling=0.2, initial_state_scale=0.3, learn_input=True, learn_recurrent=True,
                **options).double()
    with torch.no_grad():
        model.w_out.normal_()
        model.b_out.normal_()
    return model


def test_the_walk_runs_the_model_forward_pass(float64):
    model, x = esn(), torch.randn(4, T, INPUTS)
    trace, output, tangent = model.walk(x)
    assert tangent is None
    torch.testing.assert_close(output, model(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(trace.hs, model.run(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(trace.h_prev[:, 0], model.initial_state(4).h)


def test_the_weight_tangent_is_the_jvp_of_the_forward_pass(float64):
    model, x = esn(), torch.randn(4, T, INPUTS)
    names = ("w", "w_in", "b", "w_out", "b_out")
    params = {n: getattr(model, n).detach() for n in names}
    directions = {n: torch.randn(2, *p.shape) for n, p in params.items()}
    _, _, dy = model.walk(x, weight_tangents=directions)
    for k in range(2):
        _, expected = jvp(lambda p: functional_call(model, p, (x,)), (params,), ({n: v[k] for n, v in directions.items()},))
        torch.testing.assert_close(dy[k], expected, rtol=1e-10, atol=1e-10)


def test_the_site_tangent_is_the_jvp_of_the_shifted_walk(float64):
    model, x = esn(), torch.randn(4, T, INPUTS)
    shapes = model.site_shapes(x)
    zeros = [torch.zeros(4, *s) for s in shapes]
    v = [torch.randn(1, 4, *s) for s in shapes]
    _, _, dy = model.walk(x, tangents=v)
    _, expected = jvp(lambda a, b: model.walk(x, shifts=[a, b])[1], tuple(zeros), (v[0][0], v[1][0]))
    torch.testing.assert_close(dy[0], expected, rtol=1e-10, atol=1e-10)


def test_each_site_input_is_what_its_weights_multiply(float64):
    """dL/dW = sum_t (dL/dp_t) x_{t-1}^T: autograd's gradient of W equals the site error times the site's input."""
    model, x = esn(), torch.randn(4, T, INPUTS)
    shapes = model.site_shapes(x)
    shifts = [torch.zeros(4, *s, requires_grad=True) for s in shapes]
    trace, output, _ = model.walk(x, shifts=shifts)
    loss = output.pow(2).sum()
    grads = torch.autograd.grad(loss, [*shifts, model.w, model.w_in, model.b, model.w_out, model.b_out])
    delta, eps = grads[:2]
    inputs = model.site_inputs(trace)
    torch.testing.assert_close(grads[2], torch.einsum("btn,btm->nm", delta, inputs[0]["w"]))
    torch.testing.assert_close(grads[3], torch.einsum("btn,btm->nm", delta, inputs[0]["w_in"]))
    torch.testing.assert_close(grads[4], delta.sum(dim=(0, 1)))
    torch.testing.assert_close(grads[5], torch.einsum("bto,btn->on", eps, inputs[1]["w_out"]))
    torch.testing.assert_close(grads[6], eps.sum(dim=(0, 1)))


def test_a_reservoir_with_output_feedback_has_no_sites_and_np_says_what_trains_it():
    assert not esn(feedback=True).has_sites and esn().has_sites
    with pytest.raises(ValueError, match="has none: train it with method=bp, wp or fg_w"):
        NodePerturbation().bind(esn(feedback=True), seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["np", "fg_a", "fg_w"])
def test_the_perturbation_rules_estimate_bptts_gradient_on_every_weight_of_an_esn(method):
    checks = verify(["experiment=reservoirpy_mackey_glass", f"method={method}", "model.units=30", "model.learn_recurrent=true",
                     "model.learn_input=true", "data.train_steps=300", "model.washout=50"], draws=200, checks=("gradient",))
    (gradient,) = checks
    assert "claims unbiased" in gradient.name and gradient.passed, gradient.line()
