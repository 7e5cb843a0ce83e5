"""lst-jax: the Latent Speech-Text Transformer in JAX/Flax."""

__version__ = "0.1.0"
