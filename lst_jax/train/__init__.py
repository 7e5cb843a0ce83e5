"""Optimizer, losses, train step, checkpoints, metrics and the training loop."""
