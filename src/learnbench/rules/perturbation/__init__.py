"""Perturbation learning: weight perturbation, node perturbation and forward gradients (weights, activities)."""
