"""Everything distillation: the teacher cache, how teachers combine, the KD loss, the experiment.

- `teacher_cache`: the teachers' logits, computed once and stored as a TFDS dataset beside the
  base features, so a distillation step costs one student forward/backward; built-in teachers
  are run once, external ones (`external:<name>=<folder>`) read from their score files;
- `score_export`: a run's scores written in that file layout (`python -m sed_jax.export_scores`);
- `strategies`: how K teachers become one soft target (`kd.strategy`), a registry;
- `losses`: the KD term (`kd.loss`), a registry, and the objective a KD student trains on;
- `experiment`: teachers → cache → students at every seed → results.json, report.md;
- `ablation`: the KD ablation over seeds, strategies and one-seed variants.
"""
