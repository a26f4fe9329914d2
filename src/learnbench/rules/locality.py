"""What a rule's update reads: the fixed vocabulary of the locality profile (docs/locality.md).

Every rule declares, through `LearningRule.reads()`, the signals its weight update is a function of, as it is
configured (an option can change the answer: e-prop's symmetric feedback reads the readout's weights, its random
feedback does not). `python -m learnbench.tools.locality` writes the table from those declarations, and
tests/test_locality.py checks each claim by intervention: it changes one quantity and asserts that the update
changes exactly for the rules that declare a signal the intervention touches.

The names are the columns of the table, in this order. "Downstream" means the network between the synapse's
post-synaptic unit and the output.
"""

from __future__ import annotations

#: signal -> what it means (one line, the table's legend).
SIGNALS: dict[str, str] = {
    "pre": "pre-synaptic activity (inputs, rates or spikes arriving at the synapse)",
    "post": "post-synaptic activity itself (spikes, or the membrane's time course)",
    "post_derivative": "the post-synaptic unit's derivative f'(a) or spike surrogate",
    "own_weight": "the synapse's own weight (weight decay, soft bounds)",
    "global_scalar": "one scalar broadcast to every synapse: a loss change, a reward or a directional derivative",
    "own_noise": "a perturbation the rule injected itself and must remember until the scalar arrives",
    "perturbed_pass": "a second forward pass that carries the perturbation through the downstream network",
    "output_error": "the loss's derivative at the output, a vector (one entry per output unit)",
    "feedback_weights": "that vector delivered through feedback weights of the rule's own (fixed random, or learned by a local rule)",
    "transported_weights": "weights (or their signs) transported from the downstream forward path (W^T)",
    "future": "information from later time steps: a backward pass through time (on temporal models)",
    "inference_phase": "a relaxation phase on value nodes before the update",
    "local_loss": "an auxiliary head's loss on the block's own output (its own head's weights only)",
    "target": "the target itself, not an error (a closed-form regression's statistics)",
}

#: What a local-loss variant (`local` = loss or greedy) keeps of its base rule's signals: each block learns from its
#: own head, so nothing downstream of the head (transported weights, a perturbed pass through the rest) is read.
KEPT_BY_LOCAL_LOSSES = frozenset({"pre", "post_derivative", "global_scalar", "own_noise", "output_error", "feedback_weights"})


def signals(*names: str) -> frozenset[str]:
    """A declaration, its names checked against the vocabulary (a typo fails at import, not in the table)."""
    unknown = [name for name in names if name not in SIGNALS]
    if unknown:
        raise ValueError(f"unknown locality signal(s) {unknown}; the vocabulary is {list(SIGNALS)}")
    return frozenset(names)


def with_local_losses(base: frozenset[str], local: str) -> frozenset[str]:
    """A rule's declaration under its `local` option: unchanged for none, else its local part and the head's loss."""
    if local == "none":
        return base
    return (base & KEPT_BY_LOCAL_LOSSES) | {"local_loss"}
