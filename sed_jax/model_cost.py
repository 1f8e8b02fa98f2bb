r"""Parameters and FLOPs of every model, as a markdown table.

  python -m sed_jax.model_cost                  # 5 teachers + student, 10-class, 10-s clip
  python -m sed_jax.model_cost --num_classes=27 --frames=1000

How FLOPs are counted: sed_jax/models/cost.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app
from absl import flags

from sed_jax.models import cost

_NUM_CLASSES = flags.DEFINE_integer("num_classes", 10, "Output classes.")
_FRAMES = flags.DEFINE_integer("frames", 500, "Input frames (500 = 10 s at a 20-ms hop).")
_MELS = flags.DEFINE_integer("mels", 64, "Mel bands.")
_ARCHS = flags.DEFINE_list("archs", list(cost.DEFAULT_ARCHS), "Architectures to tabulate.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  shape = (1, _FRAMES.value, _MELS.value)
  rows = cost.cost_table(_ARCHS.value, _NUM_CLASSES.value, shape)
  print(cost.markdown_table(rows, shape))


if __name__ == "__main__":
  app.run(main)
