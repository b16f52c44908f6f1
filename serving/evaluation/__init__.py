"""Evaluation: UnivFD protocol reader, perturbations, per-domain results and reports."""
