"""Flax linen CRNNs (teachers and student) and their building blocks.

`crnn.make_model(arch, num_classes, **overrides)` builds any of them; `summary` tabulates their
parameters and FLOPs.
"""
