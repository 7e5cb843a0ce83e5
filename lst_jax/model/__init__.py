"""Flax NNX modules: encoder-patcher, global latent transformer, local decoder, baseline."""
