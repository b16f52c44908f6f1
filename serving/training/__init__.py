"""Torch training for the heads: losses (BCE, CVaR, AUC surrogate), SAM, trainers."""
