"""sed_jax: sound event detection by multi-teacher knowledge distillation in JAX/Flax."""

__version__ = "0.1.0"
