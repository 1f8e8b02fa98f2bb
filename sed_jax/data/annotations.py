"""DCASE annotation files: strong/weak TSVs and URBAN-SED per-file txt. (Being written.)"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, order=True)
class Event:
  """One labelled sound event; times in seconds from the start of its clip."""
  onset: float
  offset: float
  label: str


class AnnotationError(ValueError):
  """A malformed annotation file; the message names the file and line and says what to do."""


def write_strong_tsv(path, events_by_file) -> None:
  """Writes {filename: [Event, ...]} as a DCASE strong TSV (files with no event get an empty row)."""
  raise NotImplementedError
