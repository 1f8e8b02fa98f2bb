r"""Scores an estimated DCASE strong TSV against a reference one: segment- and event-based metrics.

  python -m sed_jax.score --reference=ref.tsv --estimated=est.tsv \
      [--audio_durations=durations.tsv] [--json]

Prints overall and class-wise tables, or with --json one JSON object (keys segment_* and event_*,
e.g. segment_f1_micro, segment_f1_macro, segment_er, event_f1_macro, event_f1_micro, event_er,
and a class_wise map {class: {"segment": {...}, "event": {...}}}). Undefined values (for example
the recall of a class with no reference event) are null, never NaN; macro averages are over the
classes that have reference events (see sed_jax/evaluation/metrics/).

Evaluated files: those of the reference (a file without events is listed with an empty row) and,
with --audio_durations, also every file of the durations TSV (evaluated as a file without
reference events). A file of the estimated TSV outside that set is an error: its name does not
match. Segment-based metrics need each file's duration: with --audio_durations it is read from
that TSV (columns filename, duration; DCASE's format); without it a file's duration is taken as
its last reference or estimated offset (sed_eval's rule), so trailing silence is not scored.

Classes are the labels found in either TSV (or --classes); the numbers equal sed_eval's with
DCASE task 4 settings (1 s segments; 200 ms onset collar, offset collar max(200 ms, 20 %)).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from absl import app
from absl import flags

from sed_jax.data import annotations
from sed_jax.evaluation import event_scoring

_REFERENCE = flags.DEFINE_string("reference", None, "Reference (ground truth) strong TSV.")
_ESTIMATED = flags.DEFINE_string("estimated", None, "Estimated (system output) strong TSV.")
_DURATIONS = flags.DEFINE_string(
    "audio_durations", None,
    "Optional TSV with columns filename, duration (seconds). Without it, a file's duration is "
    "taken as its last reference or estimated offset. Files it lists that the reference lacks "
    "are evaluated as files without reference events.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of tables.")
_CLASSES = flags.DEFINE_list(
    "classes", None, "Class labels to evaluate (default: the labels found in either TSV).")
_SEGMENT_S = flags.DEFINE_float("segment_s", 1.0, "Segment length (s) of segment-based metrics.")
_T_COLLAR = flags.DEFINE_float("t_collar", 0.2, "Event-based onset/offset collar (s).")
_PERCENTAGE = flags.DEFINE_float(
    "percentage_of_length", 0.2,
    "Event-based offset collar as a fraction of the reference length (DCASE: 0.2; sed_eval's "
    "default is 0.5).")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not _REFERENCE.value or not _ESTIMATED.value:
    raise app.UsageError("--reference and --estimated are required.")
  try:
    reference = annotations.read_strong_tsv(_REFERENCE.value)
    estimated = annotations.read_strong_tsv(_ESTIMATED.value)
    durations = event_scoring.read_durations_tsv(_DURATIONS.value) if _DURATIONS.value else None
    result = event_scoring.score(reference, estimated, durations, _CLASSES.value,
                                 _SEGMENT_S.value, _T_COLLAR.value, _PERCENTAGE.value)
  except (annotations.AnnotationError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(json.dumps(result, indent=2) if _JSON.value else event_scoring.format_table(result))


if __name__ == "__main__":
  app.run(main)
