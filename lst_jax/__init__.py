"""lst-jax: the Latent Speech-Text Transformer in JAX/Flax."""

__version__ = "0.1.0"


def __getattr__(name):
  """`lst_jax.load_pretrained`, imported on first use so that `import lst_jax` stays light."""
  if name == "load_pretrained":
    from lst_jax.pretrained import load_pretrained
    return load_pretrained
  raise AttributeError(f"module 'lst_jax' has no attribute {name!r}")
