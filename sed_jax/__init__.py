"""sed_jax: sound event detection by multi-teacher knowledge distillation in JAX/Flax."""

from sed_jax import xla_cpu_flags

# Before JAX starts its CPU client: the flag is read once, then (why: xla_cpu_flags).
xla_cpu_flags.configure()

__version__ = "0.1.0"
