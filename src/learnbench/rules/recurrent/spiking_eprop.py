"""e-prop for a recurrent spiking layer of LIF / ALIF units (Bellec et al. 2020, Nat. Commun. 11:3625, Methods).

The model's step (models/neurons.py, reset detached) for unit i, with z_t the synapse's presynaptic
value (x_t for W_in, S_{t-1} for W_rec, 1 for a bias) and I_t = sum_j W_ij z_t,j:

    V_t = d_t V_{t-1} + g_t I_t (- the reset)     d_t, g_t: SpikingTrajectory.membrane_decay, input_gain
    a_t = rho a_{t-1} + S_{t-1}                   ALIF; the threshold is A_t = thr + beta_a a_t
    S_t = H(V_t - A_t)                            psi_t: the surrogate's derivative (0 while refractory)

e-prop keeps each weight's influence on its own unit's state (the eligibility vector) and drops every path
through other units (W_rec S_{t-1}: the truncation, exact when W_rec = 0):

    eps^v_t = d_t eps^v_{t-1} + g_t z_t          dV_t / dW_ij along the unit's own path
    eps^a_t = rho eps^a_{t-1} + e_{t-1}           da_t / dW_ij: S_{t-1}'s own-path derivative feeds the adaptation
    e_t     = psi_t (eps^v_t - beta_a eps^a_t)    the eligibility trace, dS_t / dW_ij along the own path

The readout is a leaky integrator (or a LIF output's membrane) with decay kappa, y_t = kappa y_{t-1} + W_out S_t,
so a spike at t reaches every later output: the trace is low-pass filtered with the readout's own decay,
ebar_t = kappa ebar_{t-1} + e_t (Bellec et al.'s code), and

    dL/dW_ij ~ sum_t L_t,i ebar_t,ij,   L_t = dL/dy_t B     (B = W_out: symmetric; random / adaptive: rules/recurrent/eprop.py)

The traces leave the reset's path out whatever model.detach_reset says (Bellec et al.'s e-prop stops the gradient
of z everywhere): that option chooses only what surrogate BPTT differentiates. Their BPTT keeps the reset's
gradient (on the evidence-accumulation network BPTT with a detached reset explodes: a gradient norm of 1e12 at the
first batch, against 0.01 for e-prop), so their comparison is with model.detach_reset=false.
With symmetric feedback, W_rec = 0 and the reset detached this is the gradient surrogate BPTT takes (tests/test_spiking_eprop.py),
for the leaky-integrator readout and for the membrane readout with reset=subtract and no refractory period (an
output spike's reset to zero or a held output membrane changes kappa per step, which a fixed filter leaves out).
The readout learns by its own trace, the filtered spikes (exact where the filter is). All traces are per synapse
[batch, N, fan-in]: ALIF's eps^a and a reset to zero depend on the postsynaptic unit.

Two ways to the same sum. Walking the traces forward (`trace_window`) costs several passes over [batch, N, fan-in]
every step; it is what a window that carries its traces into the next needs (online updates, update_every=k).
A window that is the whole sequence (update_every=sequence) carries nothing, and there the sum is rearranged
(`adjoint_window`): every coefficient of the recursion above (d_t, g_t, psi_t, rho, beta_a) belongs to the
postsynaptic unit, only z_t to the synapse, so the sum is linear in z with unit-wise weights,

    sum_t L_t ebar_t = sum_t c_t e_t = sum_t (lambda^v_t g_t) z_t^T         c_t = Lbar_t (+ the penalty's signal),
    Lbar_t = L_t + kappa Lbar_{t+1}                                         the learning signal filtered backwards
    lambda^v_t = c_t psi_t + d_{t+1} lambda^v_{t+1} + psi_t lambda^a_{t+1}  dG / dV_t, from the window's end back
    lambda^a_t = -beta_a c_t psi_t + (rho - beta_a psi_t) lambda^a_{t+1}    dG / da_t

which is [batch, N] work a step and one matrix product over the window: the same numbers (tests/test_spiking_eprop.py
checks the two against each other in float64), without the per-synapse traces. The readout's sum likewise:
sum_t dL/dy_t S_bar_t^T = sum_t (dL/dy)bar_t S_t^T.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from learnbench.models.temporal import SpikingTrajectory, TemporalModel
from learnbench.rules.base import LossFn, RuleOutput
from learnbench.rules.recurrent.recurrent_rule import TraceState, hidden_parameters

TRACES = ("voltage", "adaptation", "eligibility", "filtered")  # eps^v, eps^a, e_{t-1}, ebar


def presynaptic(model: TemporalModel, run: SpikingTrajectory) -> dict[str, Tensor]:
    """z_t for every trained hidden parameter, by name, [batch, time, fan-in]: the window's inputs for W_in,
    the previous spikes for W_rec, a constant 1 for a bias."""
    recurrent = set(model.parameter_groups()["recurrent"])
    values = {}
    for name, p in hidden_parameters(model).items():
        if name in recurrent:
            values[name] = run.previous_spikes
        elif p.dim() == 2:
            values[name] = run.inputs
        else:
            values[name] = run.inputs.new_ones(*run.inputs.shape[:2], 1)
    return values


def zero_spiking_traces(z: Tensor, units: int) -> dict[str, Tensor]:
    """All traces zero at a sequence's start, [batch, N, fan-in] each."""
    zeros = z.new_zeros(z.shape[0], units, z.shape[-1])
    return {name: zeros for name in TRACES}


def trace_window(model: TemporalModel, run: SpikingTrajectory, z: Tensor, signal: Tensor,
                 traces: dict[str, Tensor], direct: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Walk the eligibility vectors through the window, summing L_t,i ebar_t,ij on the way (the traces of every
    step are never stored: [batch, N, fan-in] per step would not fit for long sequences). In place on copies of
    the carried traces: a step is then a few fused multiply-adds, no new tensors (this loop is e-prop's cost).
    `direct` [N]: a learning signal on the spikes themselves, the same at every step (the firing-rate penalty's),
    which meets the unfiltered trace: sum_t direct_i e_t,ij is added.
    Returns (the summed gradient [N, fan-in], the traces after the window, carried into the next)."""
    rho, strengths, kappa = model.adaptation_decay, model.adaptation_strengths.view(1, -1, 1), model.readout_decay
    voltage, adaptation, eligibility, filtered = (traces[name].clone() for name in TRACES)
    adapts = bool(strengths.any())  # a layer of LIF units only has no adaptation to follow
    summed = torch.zeros_like(filtered)  # sum_t L_t,i ebar_t,ij per example; summed over the batch at the end
    unfiltered = torch.zeros_like(filtered) if direct is not None else None  # sum_t e_t,ij
    for t in range(z.shape[1]):
        voltage.mul_(run.membrane_decay[:, t, :, None]).addcmul_(run.input_gain[:, t, :, None], z[:, t, None, :])
        if adapts:
            adaptation.mul_(rho).add_(eligibility)  # uses e_{t-1}: S_{t-1} enters a_t
            torch.addcmul(voltage, strengths, adaptation, value=-1, out=eligibility)
        else:
            eligibility.copy_(voltage)
        eligibility.mul_(run.pseudo_derivative[:, t, :, None])
        filtered.mul_(kappa).add_(eligibility)
        summed.addcmul_(signal[:, t, :, None], filtered)
        if unfiltered is not None:
            unfiltered.add_(eligibility)
    total = summed.sum(dim=0) if unfiltered is None else summed.sum(dim=0) + direct[:, None] * unfiltered.sum(dim=0)
    return total, dict(zip(TRACES, (voltage, adaptation, eligibility, filtered)))


def low_pass(values: Tensor, start: Tensor, kappa: float) -> Tensor:
    """v_bar_t = kappa v_bar_{t-1} + v_t over a window, [batch, time, features], from v_bar_{t0-1} = start."""
    filtered = []
    for v in values.unbind(1):
        start = kappa * start + v
        filtered.append(start)
    return torch.stack(filtered, dim=1)


def backward_filter(values: Tensor, kappa: float) -> Tensor:
    """v_hat_t = v_t + kappa v_hat_{t+1} over a window that nothing follows, [batch, time, features]: what a low-pass
    filter with decay kappa sends back to step t from every later step."""
    filtered, after = torch.empty_like(values), torch.zeros_like(values[:, 0])
    for t in range(values.shape[1] - 1, -1, -1):
        after = values[:, t] + kappa * after
        filtered[:, t] = after
    return filtered


@torch.no_grad()
def adjoint_window(model: TemporalModel, chunks: list[Tensor], starts: list[Any], runs: list[SpikingTrajectory],
                   error: Tensor, feedback: Tensor, direct: Tensor | None) -> dict[str, Tensor]:
    """The gradient of a window that is a whole sequence, by the module docstring's rearrangement: the pieces from the
    last back, each run again from the state pass 1 left before it (or pass 1's run, for a window of one piece).
    Returns the summed gradient of every readout and hidden parameter, by name."""
    kappa, rho, strengths = model.readout_decay, model.adaptation_decay, model.adaptation_strengths
    error_bar = backward_filter(error, kappa)  # (dL/dy)bar_t, [batch, time, outputs]
    readout, hidden = model.trained_parameters("readout"), hidden_parameters(model)
    grads = {name: torch.zeros_like(p) for name, p in {**readout, **hidden}.items()}
    lam_v = lam_a = next_decay = error.new_zeros(error.shape[0], feedback.shape[-1])
    t1 = error.shape[1]
    for piece, start in zip(reversed(chunks), reversed(starts)):
        run = runs[0] if runs else model.spiking_run(piece, start)
        t0 = t1 - run.spikes.shape[1]
        for name, p in readout.items():
            grads[name] += (torch.einsum("bto,btn->on", error_bar[:, t0:t1], run.spikes) if p.dim() == 2
                            else error_bar[:, t0:t1].sum(dim=(0, 1)))
        signal = error_bar[:, t0:t1] @ feedback  # Lbar_t = (dL/dy)bar_t B (filtering and B commute), a piece at a time
        c_psi = (signal if direct is None else signal + direct) * run.pseudo_derivative
        weights = torch.empty_like(c_psi)  # lambda^v_t g_t
        for t in range(c_psi.shape[1] - 1, -1, -1):
            psi = run.pseudo_derivative[:, t]
            lam_v, lam_a = (c_psi[:, t] + next_decay * lam_v + psi * lam_a,
                            (rho - strengths * psi) * lam_a - strengths * c_psi[:, t])
            next_decay = run.membrane_decay[:, t]
            weights[:, t] = lam_v * run.input_gain[:, t]
        values = presynaptic(model, run)
        share = torch.einsum("btn,btf->nf", weights, torch.cat(list(values.values()), dim=-1))
        for name, part in zip(values, share.split([v.shape[-1] for v in values.values()], dim=-1)):
            grads[name] += part.squeeze(1) if hidden[name].dim() == 1 else part
        t1 = t0
    return grads


#: Steps a pass walks at a time: what a window holds at once of the run ([batch, steps, units] columns), whatever
#: its length, so memory does not grow with T (tools/spiking_memory.py measures it).
CHUNK_STEPS = 100


def time_chunks(model: TemporalModel, x: Tensor, chunk_steps: int) -> list[Tensor]:
    """The window in pieces of `chunk_steps` steps, each run from the state the one before left. A static example
    (the model encodes its own steps: a rate code draws anew at each encoding) stays one piece."""
    if model.time_axis == "model" or x.shape[1] <= chunk_steps:
        return [x]
    return list(x.split(chunk_steps, dim=1))


@torch.no_grad()
def window_outputs(model: TemporalModel, chunks: list[Tensor], start: Any) -> tuple[Tensor, Any, list[SpikingTrajectory]]:
    """Pass 1: the readout's outputs over the window, [batch, time, outputs], piece by piece; keeps nothing of the
    hidden layer's run but the outputs (and the run itself when the window is one piece: pass 2 reuses it) and each
    unit's spike count. Returns (outputs, the state after the window, [the run] or [], spike counts [N], the state
    before each piece)."""
    state, outputs, runs, counts, starts = start, [], [], 0, []
    for piece in chunks:
        starts.append(state)
        run = model.spiking_run(piece, state, derivatives=len(chunks) == 1)  # pass 2 reruns the pieces of a long window
        output, state = model.run_readout(run.spikes, run.state)
        outputs.append(output)
        counts = counts + run.spikes.sum(dim=(0, 1))
        runs = [run] if len(chunks) == 1 else []
    return torch.cat(outputs, dim=1), state, runs, counts, starts


def readout_errors(output: Tensor, y: Tensor, loss_fn: LossFn) -> tuple[Tensor, Tensor]:
    """(batch loss, dL/dy_t [batch, time, outputs]): autograd on the outputs only."""
    with torch.enable_grad():
        output = output.requires_grad_(True)
        loss = loss_fn(output, y).mean()
        (error,) = torch.autograd.grad(loss, output)
    return loss.detach(), error


def readout_grads(model: TemporalModel, spikes: Tensor, error: Tensor, carried: dict[str, Tensor],
                  grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """Add a piece's share of the readout's gradient to `grads`; returns the readout's traces after the piece.
    Its weights learn by their own trace, the filtered spikes (and a filtered 1 for the bias),
    dL/dW_out = sum_t dL/dy_t S_bar_t^T: carried across windows, since y_t remembers W_out's earlier pushes
    through the readout's own state (autograd inside a window would lose them at the window's start)."""
    kappa = model.readout_decay
    spikes_bar = low_pass(spikes, carried["spikes"], kappa)
    ones_bar = low_pass(torch.ones_like(spikes[..., :1]), carried["ones"], kappa)
    for name, p in model.trained_parameters("readout").items():
        share = torch.einsum("bto,btn->on", error, spikes_bar) if p.dim() == 2 else torch.einsum("bto,bt->o", error, ones_bar[..., 0])
        grads[name] = share if name not in grads else grads[name] + share
    return {"spikes": spikes_bar[:, -1], "ones": ones_bar[:, -1]}


def spiking_eprop_grads(model: TemporalModel, feedback: Tensor, x: Tensor, y: Tensor, loss_fn: LossFn,
                        state: Any = None, chunk_steps: int = CHUNK_STEPS, carry: bool = True) -> RuleOutput:
    """One window of spiking e-prop: writes every trained parameter's .grad; `feedback`: B, shaped like W_out.
    `carry=False` with no state: the window is a whole sequence and nothing follows it, so its gradient is taken by
    `adjoint_window` and no traces are returned (state None); otherwise the traces are walked forward and carried.

    Two passes over the window, each `chunk_steps` steps at a time: the first runs the network for the outputs,
    whose loss gives dL/dy_t at every step (any loss over the window: the learning signal at t may depend on
    later outputs); the second runs the hidden layer again from the same state and walks the eligibility traces
    forward, online. Neither keeps the run of more than one piece: memory does not grow with the window's length
    (the outputs and errors, [batch, time, outputs], aside). A window of one piece runs once."""
    start = model.initial_state(len(x)) if state is None else state.model
    chunks = time_chunks(model, x, chunk_steps)
    output, after, runs, spike_sums, starts = window_outputs(model, chunks, start)
    loss, error = readout_errors(output, y, loss_fn)
    error = error * getattr(model, "readout_gain", 1.0)  # y_t = kappa y_{t-1} + gain W_out S_t: the gain meets every path
    direct, metrics = None, {}
    if getattr(model, "rate_penalty", 0):  # the window's rates: dPenalty/dS_t is the same for every example and step
        examples_times_steps = len(x) * output.shape[1]
        means = spike_sums / examples_times_steps
        direct = model.rate_penalty_signal(means, examples_times_steps)
        metrics["rate_penalty"] = model.penalty_of_rates(means)
    if state is None and not carry:
        grads = adjoint_window(model, chunks, starts, runs, error, feedback, direct)
        for name, p in {**model.trained_parameters("readout"), **hidden_parameters(model)}.items():
            p.grad = grads[name]
        return RuleOutput(loss=loss, output=output.detach(), metrics=metrics)
    readout = state.traces["readout"] if state is not None else None
    hidden, grads, hidden_state, t0 = None if state is None else state.traces["hidden"], {}, start, 0
    for piece in chunks:
        run = runs[0] if runs else model.spiking_run(piece, hidden_state)
        hidden_state, t1 = run.state, t0 + run.spikes.shape[1]
        if readout is None:
            readout = {"spikes": run.spikes.new_zeros(run.spikes[:, 0].shape), "ones": run.spikes.new_zeros(len(x), 1)}
        readout = readout_grads(model, run.spikes, error[:, t0:t1], readout, grads)
        # One walk for all hidden parameters: their presynaptic values side by side, the gradient split after.
        values = presynaptic(model, run)
        z = torch.cat(list(values.values()), dim=-1)
        hidden = zero_spiking_traces(z, run.spikes.shape[-1]) if hidden is None else hidden
        signal = error[:, t0:t1] @ feedback  # L_t = dL/dy_t B, [batch, piece, N]
        share, hidden = trace_window(model, run, z, signal, hidden, direct)
        for name, part in zip(values, share.split([v.shape[-1] for v in values.values()], dim=-1)):
            grads[name] = part if name not in grads else grads[name] + part
        t0 = t1
    for name, p in {**model.trained_parameters("readout"), **hidden_parameters(model)}.items():
        p.grad = grads[name].squeeze(1) if p.dim() == 1 and grads[name].dim() == 2 else grads[name]
    return RuleOutput(loss=loss, output=output.detach(), metrics=metrics,
                      state=TraceState(after.detach(), {"hidden": hidden, "readout": readout}))
