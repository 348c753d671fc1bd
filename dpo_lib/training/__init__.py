"""Training: the DPO loop, log-probabilities, checkpoints, metrics. Imports torch."""
