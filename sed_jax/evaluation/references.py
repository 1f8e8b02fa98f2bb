"""The reference implementations, driven the way DCASE baselines drive them.

Our metrics are checked against these (tests) and timed against them (benchmarks); both need the
same, correct way of calling them, so it lives here once. Needs the `test` extra (sed_eval).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sed_jax.data.annotations import Event


def run_sed_eval(reference: Mapping[str, Sequence[Event]],
                 estimated: Mapping[str, Sequence[Event]], classes: Sequence[str],
                 durations: Mapping[str, float] | None = None,
                 percentage_of_length: float = 0.2, t_collar: float = 0.2):
  """sed_eval's (SegmentBasedMetrics, EventBasedMetrics), run as DESED_task runs them: file by
  file over the reference files, 1-s segments, `empty_system_output_handling='zero_score'`."""
  import sed_eval  # pylint: disable=g-import-not-at-top
  seg = sed_eval.sound_event.SegmentBasedMetrics(list(classes), time_resolution=1.0)
  # sed_eval's constructor does not pass this setting on; set it on the object.
  seg.empty_system_output_handling = "zero_score"
  ev = sed_eval.sound_event.EventBasedMetrics(
      list(classes), t_collar=t_collar, percentage_of_length=percentage_of_length,
      empty_system_output_handling="zero_score")
  for name, events in reference.items():
    ref = [_row(name, e) for e in events]
    est = [_row(name, e) for e in estimated.get(name, [])]
    seg.evaluate(ref, est, None if durations is None else durations[name])
    ev.evaluate(ref, est)
  return seg, ev


def _row(name: str, e: Event) -> dict:
  return {"filename": name, "onset": e.onset, "offset": e.offset, "event_label": e.label}
