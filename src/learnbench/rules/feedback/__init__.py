"""Feedback alignment and its relatives: the error reaches each layer through feedback weights B
instead of the transposed forward weights (FA, DFA, Kolen-Pollack, sign symmetry)."""
