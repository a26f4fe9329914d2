"""rflo and eprop on the echo-state network (model=esn: x_t = (1 - a) x_{t-1} + a tanh(W x_{t-1} + W_in u_t + b)),
where tanh comes after the sum (Murray's own units) and the traces are one per synapse. Oracles, float64:

- With W = 0 no path runs through other units, so e-prop's trace is the exact influence dx_t,i/dW_ij and symmetric
  e-prop equals autograd's gradient of the loss, for W, W_in, b and the readout.
- With W != 0, RFLO's gradient equals Murray's equations written out synapse by synapse in NumPy (a second,
  independent implementation): e_t,ij = (1 - a) e_{t-1,ij} + a tanh'(v_t,i) z_t,j, dW_ij = sum_t (B^T err_t)_i e_t,ij.
- A sequence cut into windows, the traces carried, gives the gradient of one window over all of it.
- The refusals: output feedback (a path the traces leave out), and rtrl, whose Jacobian is written for model=rnn.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import CSV_ONLY, compose_config
from learnbench.models import ESN
from learnbench.rules import RFLO, EProp
from learnbench.train import ConfigError, build

F64 = torch.float64


def mse(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((output - y) ** 2).sum(dim=(1, 2))


def esn(zero_w: bool = False, seed: int = 0) -> ESN:
    torch.manual_seed(seed)
    model = ESN(2, 3, units=6, spectral_radius=0.9, leak_rate=0.4, input_scaling=0.8, input_connectivity=1.0,
                connectivity=0.6, bias_scaling=0.3, learn_input=True, learn_recurrent=True).double()
    with torch.no_grad():
        model.w_out.normal_(0, 0.5)  # a readout that is not zero, so the hidden units get a signal
        if zero_w:
            model.w.zero_()
    return model


def data(seed: int = 1, time: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(2, time, 2, generator=generator, dtype=F64), torch.randn(2, time, 3, generator=generator, dtype=F64))


def rule_grads(rule, model: ESN, windows: list[tuple[int, int]], x, y) -> dict[str, torch.Tensor]:
    """The rule's gradients over the windows of one sequence, the state carried (summed, as the training module does)."""
    rule.bind(model, seed=0)
    total, state = {}, None
    for t0, t1 in windows:
        for p in model.parameters():
            p.grad = None
        state = rule.estimate_grads(model, x[:, t0:t1], y[:, t0:t1], mse, state=state).state
        for name, p in model.named_parameters():
            if p.grad is not None:
                total[name] = total.get(name, 0) + p.grad
    return total


def test_symmetric_eprop_with_no_recurrent_weights_is_the_exact_gradient():
    model, (x, y) = esn(zero_w=True), data()
    grads = rule_grads(EProp(feedback="symmetric"), model, [(0, x.shape[1])], x, y)
    model.zero_grad()
    mse(model(x), y).mean().backward()
    assert set(grads) == {"w", "w_in", "b", "w_out", "b_out"}
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-10, atol=1e-12, msg=name)
    assert grads["w"].abs().max() > 1e-3  # W = 0 still gets a gradient


def murray_rflo(model: ESN, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """RFLO for Murray's units, one synapse at a time: v_t = W x_{t-1} + W_in u_t + b, x_t = (1 - a) x_{t-1} + a tanh(v_t),
    y_t = W_out x_t + b_out, err_t = dL/dy_t (L = mean over the batch of sum_t |y_t - target_t|^2)."""
    w, w_in, bias, w_out, b_out = (p.detach().numpy() for p in (model.w, model.w_in, model.b, model.w_out, model.b_out))
    a, (batch, time, _), n = model.a, x.shape, model.units
    grads = {"w": np.zeros_like(w), "w_in": np.zeros_like(w_in), "b": np.zeros_like(bias)}
    for k in range(batch):
        h = np.zeros(n)
        e_w, e_in, e_b = np.zeros_like(w), np.zeros_like(w_in), np.zeros_like(bias)
        for t in range(time):
            v = w @ h + w_in @ x[k, t] + bias
            slope = 1 - np.tanh(v) ** 2
            for i in range(n):
                for j in range(n):
                    e_w[i, j] = (1 - a) * e_w[i, j] + a * slope[i] * h[j]
                for j in range(x.shape[2]):
                    e_in[i, j] = (1 - a) * e_in[i, j] + a * slope[i] * x[k, t, j]
                e_b[i] = (1 - a) * e_b[i] + a * slope[i]
            h = (1 - a) * h + a * np.tanh(v)
            err = 2 * (w_out @ h + b_out - y[k, t]) / batch
            signal = b.T @ err
            grads["w"] += signal[:, None] * e_w
            grads["w_in"] += signal[:, None] * e_in
            grads["b"] += signal * e_b
    return grads


def test_rflo_on_the_esn_is_murrays_rule_written_synapse_by_synapse():
    model, (x, y) = esn(), data()
    rule = RFLO()
    grads = rule_grads(rule, model, [(0, x.shape[1])], x, y)
    oracle = murray_rflo(model, rule.feedback.detach().numpy(), x.numpy(), y.numpy())
    for name in ("w", "w_in", "b"):
        np.testing.assert_allclose(grads[name].numpy(), oracle[name], rtol=1e-10, atol=1e-12, err_msg=name)
    assert not torch.allclose(grads["w"], torch.zeros_like(grads["w"]))


@pytest.mark.parametrize("rule", [RFLO, EProp])
def test_windows_with_the_traces_carried_sum_to_one_window(rule):
    model, (x, y) = esn(), data()
    whole = rule_grads(rule(), model, [(0, 9)], x, y)
    cut = rule_grads(rule(), model, [(0, 2), (2, 7), (7, 9)], x, y)
    for name in whole:
        torch.testing.assert_close(cut[name], whole[name], rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize(("overrides", "message"), [
    (["method=rflo", "model.feedback=true"], "method=rflo's traces leave out the path through the fed-back output"),
    (["method=eprop", "model.feedback=true"], "method=eprop's traces leave out the path through the fed-back output"),
    (["method=rtrl"], "train it with method=bptt, bp, rflo or eprop"),
])
def test_what_the_traces_cannot_do_on_the_esn_is_refused_in_one_line(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as error:
        build(compose_config(["data=mackey_glass", "model=esn", "model.learn_recurrent=true", *overrides, *CSV_ONLY], tmp_path))
    assert "\n" not in str(error.value)
