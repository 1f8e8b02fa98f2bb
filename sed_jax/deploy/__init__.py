"""Trained models out of the JAX process: `artifact` writes the detector folder that
`sed_jax/edge.py` runs, `onnx_graph` turns a JAX function into standard ONNX operators."""
